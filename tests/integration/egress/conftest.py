"""Fixtures of the egress tests: the fake internet (see fake_internet.py), skipped without root/nft, and a
leak check after every test (no namespace this process made, no /etc/netns overlay of one, no nft session
thread left)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from .fake_internet import FakeInternet, fake_internet
from .netns import MADE_HERE, netns_missing


@pytest.fixture
async def internet() -> AsyncIterator[FakeInternet]:
    """A fresh fake internet with no policy (allow-all); removed, all of it, after the test."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_internet() as built:
        yield built


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test that leaves a namespace, an /etc/netns overlay or an nft session thread behind."""
    yield
    leaked_threads = [t.name for t in threading.enumerate() if t.name in ("nft", "netns-socket")]
    assert leaked_threads == [], "nft session threads left running (hold their namespaces alive)"
    if netns_missing() is None:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert [n for n in listed.split() if n in MADE_HERE] == []
        overlays = os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []
        assert [n for n in overlays if n in MADE_HERE] == []
