"""Shared fixtures for integration tests: a real backend on a throw-away data dir.

Kept minimal on purpose (other test modules bring their own fixtures):

    @requires_bwrap
    async def test_x(backend: Backend, new_sandbox: MakeSandbox) -> None: ...
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from osbox.server._backend import Backend, SandboxSpec, default_backend, remove_tree
from osbox.server._backend.bwrap.backend import BwrapSandbox

MakeSandbox = Callable[..., Awaitable[BwrapSandbox]]


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
        remove_tree(parent)  # unmounting what sandboxes' disks left mounted first


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


@contextlib.asynccontextmanager
async def sandbox_factory(
    backend: Backend,
    backend_data_dir: Path,
    *,
    entrypoint: Sequence[str] = (),
    make_state_dir: bool = False,
) -> AsyncIterator[MakeSandbox]:
    """A factory for sandboxes (`entrypoint` unless given) that are all destroyed at the end of the
    block, also on failure. With `make_state_dir`, an empty state dir is made first, as the manager
    does."""
    created: list[BwrapSandbox] = []
    default_entrypoint = entrypoint

    async def make(entrypoint: Sequence[str] = default_entrypoint, **options: Any) -> BwrapSandbox:
        sandbox_id = options.pop("sandbox_id", f"t-{secrets.token_hex(4)}")
        state_dir = backend_data_dir / "sandboxes" / sandbox_id
        if make_state_dir:
            state_dir.mkdir(parents=True)
        handle = await backend.create(SandboxSpec(sandbox_id, list(entrypoint), state_dir, **options))
        assert isinstance(handle, BwrapSandbox)
        created.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in created:
            await backend.destroy(handle)


@pytest.fixture
async def new_sandbox(backend: Backend, backend_data_dir: Path) -> AsyncIterator[MakeSandbox]:
    """A factory for sandboxes of `backend` that are all destroyed afterwards, also when the test fails.

    (Not `make_sandbox`: that is the HTTP API's fixture, in `server_fixtures`.)"""
    async with sandbox_factory(backend, backend_data_dir) as make:
        yield make
