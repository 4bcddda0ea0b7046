"""Fixtures of the egress tests: the fake internet (see fake_internet.py), skipped without root/nft."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .fake_internet import FakeInternet, fake_internet
from .netns import netns_missing


@pytest.fixture
async def internet() -> AsyncIterator[FakeInternet]:
    """A fresh fake internet with no policy (allow-all); removed, all of it, after the test."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_internet() as built:
        yield built
