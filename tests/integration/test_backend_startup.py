"""How the bubblewrap backend starts sandboxes fast: agent bytecode, and the warm pool.

A pooled sandbox is started before its owner is known; these tests check that the owner gets
exactly what a cold start would give (environment, limits, state dir, a fresh uid) and nothing
from the pool, and that the pool leaves nothing behind (close, crash + restart).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from osbox.server._backend import Mount, SandboxSpec
from osbox.server._backend.bwrap import layout as lay
from osbox.server._backend.bwrap.agent_code import agent_files
from osbox.server._backend.bwrap.backend import _AGENT_DIR, BwrapBackend, BwrapSandbox
from tests.integration.conftest import MakeSandbox, requires_bwrap, sandbox_factory
from tests.integration.test_backend import assert_gone, run
from tests.polling import wait_until_async

pytestmark = [requires_bwrap, pytest.mark.timeout(60)]


@pytest.fixture
async def pooled_backend(backend_data_dir: Path) -> AsyncIterator[BwrapBackend]:
    """A backend keeping 2 sandboxes pre-started, full before the test begins; closed after."""
    backend = BwrapBackend(backend_data_dir, pool_size=2)
    try:
        await backend.start()
        await wait_until_async(lambda: backend.pooled == 2, timeout=30)
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def create(pooled_backend: BwrapBackend, backend_data_dir: Path) -> AsyncIterator[MakeSandbox]:
    """Create sandboxes the way the manager does (an empty state dir made first); destroyed after."""
    factory = sandbox_factory(
        pooled_backend, backend_data_dir, entrypoint=["sleep", "60"], make_state_dir=True
    )
    async with factory as make:
        yield make


# --- agent bytecode -------------------------------------------------------------------------------


def test_the_agent_ships_as_bytecode_of_the_sandbox_python(backend_data_dir: Path) -> None:
    backend = BwrapBackend(backend_data_dir)
    assert backend._agent_script == "main.pyc"
    assert sorted(backend._memfds) == [
        "accounts.pyc",
        "fs.pyc",
        "identity.pyc",
        "main.pyc",
        "protocol.pyc",
        "watch.pyc",
    ]


def test_agent_sources_are_shipped_when_compiling_fails() -> None:
    files, script = agent_files("/no/such/python", _AGENT_DIR, lay.AGENT_DIR)
    assert script == "main.py"
    assert sorted(files) == ["accounts.py", "fs.py", "identity.py", "main.py", "protocol.py", "watch.py"]
    assert files["main.py"] == (_AGENT_DIR / "main.py").read_bytes()


# --- warm pool ------------------------------------------------------------------------------------


async def test_a_pooled_sandbox_gets_its_owners_settings(
    pooled_backend: BwrapBackend, create: MakeSandbox
) -> None:
    entrypoint = ["sh", "-c", 'echo "$OWNER started"; exec sleep 60']
    # 256 MiB: the smallest limit whose tmpfs sizes are a pre-started sandbox's (see `tmpfs_sizes`).
    sandbox = await create(entrypoint, env={"OWNER": "alice"}, memory_bytes=256 << 20, pids_max=64)
    assert sandbox.from_pool
    await wait_until_async(lambda: sandbox.log_path.read_text() == "alice started\n")
    assert sandbox.log_path == sandbox.spec.state_dir / "run" / "entrypoint.log"
    code, out, _ = await run(
        sandbox, ["sh", "-c", 'echo "$OWNER $HOME"; pwd; ls -A /workspace /tmp /home/sandbox']
    )
    assert code == 0
    assert out.split("\n", 2)[:2] == ["alice /home/sandbox", "/workspace"]
    assert "ls:" not in out and out.count(":\n\n") + out.endswith(":\n") == 3  # all three empty
    # Files land in the owner's state dir, where the manager (and snapshots) look for them.
    assert (await run(sandbox, ["sh", "-c", "echo hi > /workspace/f"]))[0] == 0
    assert (sandbox.spec.state_dir / "fs" / "workspace" / "f").read_text() == "hi\n"
    if sandbox.cgroup is not None and "memory" in sandbox.cgroup.paths:
        assert sandbox.limits_enforced
        code, out, _ = await run(
            sandbox, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max"]
        )
        assert out.split() == [str(256 << 20), "64"]
    await wait_until_async(lambda: pooled_backend.pooled == 2, timeout=30)  # refilled


async def test_pooled_sandboxes_share_nothing(create: MakeSandbox) -> None:
    first = await create(env={"SECRET": "first-owner"})
    second = await create()
    assert first.from_pool and second.from_pool
    assert first.host_uid != second.host_uid and first.agent_pid != second.agent_pid
    assert (await run(first, ["sh", "-c", "echo x > /workspace/mine; echo y > /tmp/mine"]))[0] == 0
    code, out, _ = await run(second, ["sh", "-c", 'ls -A /workspace /tmp; echo "[$SECRET]"'])
    assert code == 0 and "mine" not in out and "[]" in out


async def test_specs_the_pool_cannot_serve_start_their_own(
    pooled_backend: BwrapBackend, create: MakeSandbox, backend_data_dir: Path
) -> None:
    shared = backend_data_dir.parent / "shared"
    shared.mkdir(mode=0o755)
    with_mount = await create(mounts=[Mount(shared, "/mnt/shared", read_only=True)])
    other_host = await create(hostname="box")
    assert not with_mount.from_pool and not other_host.from_pool
    assert pooled_backend.pooled == 2
    # A seeded state dir (a snapshot restore) keeps its files: no pooled sandbox over it.
    state_dir = backend_data_dir / "sandboxes" / "seeded"
    (state_dir / "fs" / "workspace").mkdir(parents=True)
    (state_dir / "fs" / "workspace" / "restored").write_text("from a snapshot\n")
    seeded = await pooled_backend.create(SandboxSpec("seeded", ["sleep", "60"], state_dir))
    try:
        assert isinstance(seeded, BwrapSandbox) and not seeded.from_pool
        assert await run(seeded, ["cat", "/workspace/restored"]) == (0, "from a snapshot\n", "")
    finally:
        await pooled_backend.destroy(seeded)


async def test_close_destroys_the_pool(backend_data_dir: Path) -> None:
    backend = BwrapBackend(backend_data_dir, pool_size=2)
    try:
        await backend.start()
        await wait_until_async(lambda: backend.pooled == 2, timeout=30)
        pooled = list(backend._pool._ready)
    finally:
        await backend.close()
    for handle in pooled:
        assert_gone(handle)
    assert not (backend_data_dir / "pool").exists()


async def test_a_crashed_servers_pool_is_removed_at_start(backend_data_dir: Path) -> None:
    crashed = BwrapBackend(backend_data_dir, pool_size=1)
    successor = BwrapBackend(backend_data_dir)
    try:
        await crashed.start()
        await wait_until_async(lambda: crashed.pooled == 1, timeout=30)
        left = list(crashed._pool._ready)
        crashed._pool._ready.clear()  # as if the server had been killed: nobody destroys them
        await successor.start()
        for handle in left:
            assert_gone(handle)
        assert list((backend_data_dir / "pool").iterdir()) == []
    finally:
        await crashed.close()
        await successor.close()
