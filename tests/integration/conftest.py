"""Shared fixtures for integration tests: a real backend on a throw-away data dir.

Kept minimal on purpose (other test modules bring their own fixtures):

    @requires_bwrap
    async def test_x(backend: Backend) -> None: ...
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from osbox.server._backend import Backend, default_backend


def bwrap_missing() -> str | None:
    """Why real sandboxes cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"sandboxes need Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    return None


requires_bwrap = pytest.mark.skipif(bwrap_missing() is not None, reason=bwrap_missing() or "")


@pytest.fixture
def backend_data_dir() -> Iterator[Path]:
    """A fresh data dir outside /tmp (so the in-sandbox cover over it is exercised).

    Its parent is searchable by unprivileged users, as the backend requires; pytest's `tmp_path`
    is not (it lives under a root-only directory).
    """
    parent = Path(tempfile.mkdtemp(prefix="osbox-backend-test-", dir="/var/tmp"))
    try:
        parent.chmod(0o711)
        yield parent / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
async def backend(backend_data_dir: Path) -> AsyncIterator[Backend]:
    """The machine's default backend over `backend_data_dir`, closed afterwards."""
    reason = bwrap_missing()
    if reason is not None:
        pytest.skip(reason)
    instance = default_backend(backend_data_dir)
    try:
        yield instance
    finally:
        await instance.close()
