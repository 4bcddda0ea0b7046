"""The bubblewrap backend against real processes, namespaces and cgroups.

Every sandbox a test makes is destroyed in a fixture's `finally`; tests that kill things check
that no process, cgroup or mount is left behind.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from osbox.server._backend import Backend, BackendError, Mount, SandboxSpec
from osbox.server._backend.base import SandboxOSError
from osbox.server._backend.bwrap.backend import UID_BASE, BwrapBackend, BwrapSandbox
from osbox.server._backend.bwrap.cgroups import CgroupLayout
from tests.integration.conftest import MakeSandbox, requires_bwrap
from tests.polling import wait_until_async

pytestmark = [requires_bwrap, pytest.mark.timeout(60)]


async def run(
    handle: BwrapSandbox, argv: Sequence[str], *, stdin: bytes = b"", **options: Any
) -> tuple[int, str, str]:
    """Run `argv` in the sandbox with pipes; returns (exit code, stdout, stderr)."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        options.setdefault("env", {})
        options.setdefault("cwd", "/workspace")
        process = await handle.spawn(argv, stdin=in_read, stdout=out_write, stderr=err_write, **options)
    finally:
        for fd in (in_read, out_write, err_write):
            os.close(fd)
    loop = asyncio.get_running_loop()
    try:
        os.write(in_write, stdin)
    finally:
        os.close(in_write)
    out, err = await asyncio.gather(
        loop.run_in_executor(None, _read_all, out_read), loop.run_in_executor(None, _read_all, err_read)
    )
    return await process.wait(), out, err


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def host_processes_of(uid: int, count: int = 1) -> list[int]:
    """Host pids of live (non-zombie) processes whose real uid is in `uid .. uid + count - 1`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if uid <= int(fields["Uid"].split()[0]) < uid + count and not fields["State"].strip().startswith("Z"):
            found.append(int(entry))
    return found


def assert_gone(handle: BwrapSandbox) -> None:
    """No process, cgroup or mount of the sandbox is left."""
    if handle.ids is not None:  # every id of its range
        assert host_processes_of(handle.ids.base, handle.ids.size) == []
    elif os.geteuid() == 0:
        assert host_processes_of(handle.host_uid) == []
    assert (
        not Path(f"/proc/{handle.agent_pid}").exists()
        or "State:\tZ" in Path(f"/proc/{handle.agent_pid}/status").read_text()
    )
    if handle.cgroup is not None:
        assert all(not path.exists() for path in handle.cgroup.paths.values())
    assert str(handle.spec.state_dir) not in mountinfo()


def mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def host_uid_of(pid: int) -> int:
    """The real uid of host process `pid`."""
    return int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])


# --- processes ------------------------------------------------------------------------------------


async def test_spawn_with_pipes_and_exit_codes(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    assert await run(sandbox, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    assert await run(sandbox, ["cat"], stdin=b"piped through\n") == (0, "piped through\n", "")
    code, _, _ = await run(sandbox, ["sh", "-c", "kill -TERM $$"])
    assert code == -signal.SIGTERM


async def test_spawn_without_stdio_and_signal_group(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    process = await sandbox.spawn(["sleep", "60"], env={}, cwd="/")
    assert process.pid > 0
    process.signal_group(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    process.signal_group(signal.SIGTERM)  # gone by now: no error


async def test_signal_group_after_the_leader_exited(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    leader = await sandbox.spawn(["sh", "-c", "sleep 60 & echo started"], env={}, cwd="/", uid=1000, gid=1000)
    assert await leader.wait() == 0
    assert (await run(sandbox, ["pgrep", "-x", "sleep"]))[0] == 0  # its group lives on
    leader.signal_group(signal.SIGKILL)  # through the agent now: the leader's host pid may be reused
    deadline = time.monotonic() + 10
    while (await run(sandbox, ["pgrep", "-x", "sleep"]))[0] == 0:
        assert time.monotonic() < deadline, "the group survived"


async def test_env_and_cwd(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(env={"FROM_SPEC": "spec", "SHARED": "spec"})
    code, out, _ = await run(
        sandbox,
        ["sh", "-c", 'echo "$FROM_SPEC $SHARED $EXTRA $HOME $USER $(id -u) $(pwd)"'],
        env={"SHARED": "call", "EXTRA": "x"},
        cwd="/tmp",
    )
    assert (code, out) == (0, "spec call x /home/sandbox sandbox 1000 /tmp\n")


async def test_spawn_errors_are_clear(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    with pytest.raises(SandboxOSError) as missing_cwd:
        await sandbox.spawn(["true"], env={}, cwd="/no/such/dir")
    assert missing_cwd.value.errno == errno.ENOENT and missing_cwd.value.filename == "/no/such/dir"
    with pytest.raises(SandboxOSError) as missing_program:
        await sandbox.spawn(["no-such-program"], env={}, cwd="/")
    assert missing_program.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="uid 70000 does not exist"):
        await sandbox.spawn(["true"], env={}, cwd="/", uid=70000)
    assert await run(sandbox, ["true"]) == (0, "", "")  # the agent is still fine


async def test_entrypoint_output_goes_to_log(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sh", "-c", "echo started; echo oops >&2; exec sleep 60"])
    await wait_until_async(lambda: sandbox.log_path.read_text() == "started\noops\n")


# --- isolation ------------------------------------------------------------------------------------


async def test_sees_only_its_own_processes(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sleep", "60"], hostname="box")
    code, out, _ = await run(sandbox, ["sh", "-c", "ls /proc | grep -E '^[0-9]+$' | sort -n; hostname"])
    *pids, hostname = out.split()
    assert code == 0 and hostname == "box"
    assert pids[0] == "1" and len(pids) < 10  # agent, entrypoint, this shell and its pipeline
    assert str(os.getpid()) not in pids or os.getpid() < 10


async def test_not_host_root(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    process = await sandbox.spawn(["sleep", "60"], env={}, cwd="/")
    try:
        host_uid = host_uid_of(process.pid)
        assert host_uid != 0
        if os.geteuid() == 0:
            assert host_uid == sandbox.host_uid >= UID_BASE
    finally:
        process.signal_group(signal.SIGKILL)
        await process.wait()
    code, out, _ = await run(sandbox, ["id", "-u"])
    assert (code, out) == (0, "1000\n")
    code, _, err = await run(sandbox, ["cat", "/etc/shadow"])
    assert code != 0 and "Permission denied" in err


async def test_filesystem_is_read_only_except_private_dirs(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    for path in ("/usr/osbox-test", "/osbox-test", "/etc/osbox-test"):
        code, _, _ = await run(sandbox, ["touch", path])
        assert code != 0, path
    for path in ("/workspace/f", "/tmp/f", "/home/sandbox/f"):
        assert (await run(sandbox, ["sh", "-c", f"echo data > {path} && cat {path}"]))[1] == "data\n"
    assert (sandbox.spec.state_dir / "fs" / "workspace" / "f").read_text() == "data\n"


async def test_sandboxes_cannot_see_each_other_or_the_data_dir(
    new_sandbox: MakeSandbox, backend_data_dir: Path
) -> None:
    first = await new_sandbox()
    second = await new_sandbox()
    assert (await run(first, ["sh", "-c", "echo secret > /workspace/secret"]))[0] == 0
    assert await run(second, ["ls", "-A", "/workspace"]) == (0, "", "")
    code, out, _ = await run(second, ["ls", "-A", str(backend_data_dir)])
    assert (code, out) == (0, "")  # covered by an empty tmpfs
    code, _, _ = await run(second, ["cat", str(first.spec.state_dir / "fs" / "workspace" / "secret")])
    assert code != 0


async def test_host_mount(new_sandbox: MakeSandbox, backend_data_dir: Path) -> None:
    shared = backend_data_dir.parent / "shared"
    shared.mkdir(mode=0o755)
    (shared / "in.txt").write_text("from host\n")
    sandbox = await new_sandbox(mounts=[Mount(shared, "/mnt/shared", read_only=True)])
    assert await run(sandbox, ["cat", "/mnt/shared/in.txt"]) == (0, "from host\n", "")
    assert (await run(sandbox, ["touch", "/mnt/shared/new"]))[0] != 0


# --- connect / open / call ------------------------------------------------------------------------


async def test_connect_reaches_a_server_inside(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    port = 20000 + secrets.randbelow(20000)
    server = await sandbox.spawn(
        ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"], env={}, cwd="/workspace"
    )
    try:
        await run(sandbox, ["sh", "-c", "echo hello > /workspace/index.txt"])
        deadline = time.monotonic() + 15
        while True:
            try:
                reader, writer = await sandbox.open_connection(port)
                break
            except SandboxOSError as exc:
                assert exc.errno == errno.ECONNREFUSED
                assert time.monotonic() < deadline, "the server inside never listened"
                await asyncio.sleep(0.02)
        writer.write(b"GET /index.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"hello\n")
        with pytest.raises(OSError):  # not reachable from the host's network
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        server.signal_group(signal.SIGKILL)
        await server.wait()


async def test_open_file_is_confined_to_the_sandbox_view(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    fd = await sandbox.open_file("/workspace/note.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as note:
        note.write(b"written through an fd\n")
    assert await run(sandbox, ["cat", "/workspace/note.txt"]) == (0, "written through an fd\n", "")
    fd = await sandbox.open_file("/workspace/note.txt", os.O_RDONLY)
    with os.fdopen(fd, "rb") as note:
        assert note.read() == b"written through an fd\n"
    await run(sandbox, ["ln", "-s", "/etc/shadow", "/workspace/link"])
    with pytest.raises(SandboxOSError) as denied:
        await sandbox.open_file("/workspace/link", os.O_RDONLY)
    assert denied.value.errno == errno.EACCES
    with pytest.raises(SandboxOSError) as missing:
        await sandbox.open_file(str(sandbox.spec.state_dir / "fs" / "workspace" / "note.txt"), os.O_RDONLY)
    assert missing.value.errno == errno.ENOENT  # host paths mean nothing inside


async def test_call_runs_fs_ops_inside(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    stats = await sandbox.call("stat", paths=["/workspace"])
    assert stats["/workspace"]["type"] == "directory"
    with pytest.raises(SandboxOSError) as missing:
        await sandbox.call("stat", paths=["/workspace/missing"])
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="unknown file-system op"):
        await sandbox.call("no_such_op")


# --- limits, pause, destroy -----------------------------------------------------------------------


async def test_memory_hog_is_oom_killed(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(memory_bytes=64 << 20)
    if not sandbox.limits_enforced:
        pytest.skip(f"memory limits are not enforced here: {sandbox.limits_message}")
    code, _, _ = await run(sandbox, ["python3", "-S", "-c", "x = b'x' * (512 << 20)"])
    assert code == -signal.SIGKILL
    assert await run(sandbox, ["echo", "alive"]) == (0, "alive\n", "")


async def test_fork_bomb_is_contained_and_cleaned_up(backend: Backend, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(pids_max=40)
    if not sandbox.limits_enforced or sandbox.cgroup is None or "pids" not in sandbox.cgroup.paths:
        pytest.skip(f"pids limits are not enforced here: {sandbox.limits_message}")
    # Every process forks forever, ignoring failures, so the bomb cannot burn out by itself.
    bomb_code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    bomb = await sandbox.spawn(["python3", "-S", "-c", bomb_code], env={}, cwd="/")
    pids_dir = sandbox.cgroup.paths["pids"]
    await wait_until_async(
        lambda: "max 0" not in (pids_dir / "pids.events").read_text()
    )  # forks were refused
    assert int((pids_dir / "pids.current").read_text()) <= 40
    await backend.destroy(sandbox)
    await bomb.wait()  # its leader may have exited on its own, leaving the bomb running
    assert_gone(sandbox)


async def test_pause_freezes_and_resume_thaws(backend: Backend, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; done"])
    if sandbox.cgroup is None or not sandbox.cgroup.can_freeze:
        pytest.skip("no cgroup freezer here")
    count = sandbox.spec.state_dir / "fs" / "tmp" / "count"

    def value() -> int:
        text = count.read_text().strip()
        return int(text) if text else -1

    await wait_until_async(lambda: count.exists() and value() > 0)
    await backend.pause(sandbox)
    frozen_at = value()
    for _ in range(20):  # observe a while: a frozen loop never writes
        assert value() == frozen_at
        await asyncio.sleep(0.01)
    await backend.resume(sandbox)
    await wait_until_async(lambda: value() > frozen_at + 10)


async def test_destroy_leaves_nothing_and_is_idempotent(backend: Backend, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sh", "-c", "sleep 60 & sleep 60"], memory_bytes=128 << 20)
    child = await sandbox.spawn(["sh", "-c", "sleep 60 & exec sleep 60"], env={}, cwd="/")
    assert backend.is_alive(sandbox)
    await backend.destroy(sandbox)
    await backend.destroy(sandbox)
    assert not backend.is_alive(sandbox)
    assert await child.wait() == -signal.SIGKILL
    assert_gone(sandbox)
    with pytest.raises(BackendError):
        await sandbox.spawn(["true"], env={}, cwd="/")


async def test_destroy_while_paused(backend: Backend, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sleep", "60"])
    if sandbox.cgroup is None or not sandbox.cgroup.can_freeze:
        pytest.skip("no cgroup freezer here")
    await backend.pause(sandbox)
    await backend.destroy(sandbox)
    assert_gone(sandbox)


def cgroup_dirs_named(backend: Backend, name: str) -> list[Path]:
    """The backend's cgroup directories called `name` that exist."""
    assert isinstance(backend, BwrapBackend)
    return [parent / name for parent in backend._cgroups.parents.values() if (parent / name).exists()]


async def test_failed_entrypoint_cleans_up(backend: Backend, backend_data_dir: Path) -> None:
    spec = SandboxSpec("bad", ["/no/such/entrypoint"], backend_data_dir / "sandboxes" / "bad", pids_max=10)
    with pytest.raises(BackendError, match=r"failed to start: .*No such file"):
        await backend.create(spec)
    assert not (spec.state_dir / "run" / "agent.sock").exists()
    assert "osbox-bad" not in mountinfo()
    assert cgroup_dirs_named(backend, "osbox-bad") == []


async def test_failed_bwrap_setup_cleans_up(backend: Backend, backend_data_dir: Path) -> None:
    shared = backend_data_dir.parent / "shared"
    shared.mkdir(mode=0o755)
    state_dir = backend_data_dir / "sandboxes" / "badmount"
    spec = SandboxSpec("badmount", [], state_dir, pids_max=10, mounts=[Mount(shared, "/proc/osbox")])
    with pytest.raises(BackendError, match="failed to start") as failure:
        await backend.create(spec)
    assert "/proc/osbox" in str(failure.value)  # bwrap's own words are passed on
    assert cgroup_dirs_named(backend, "osbox-badmount") == []
    record = state_dir / "run" / "agent.json"
    assert not record.exists()


async def test_a_state_dir_too_deep_for_a_socket_address_works(
    backend: Backend, backend_data_dir: Path
) -> None:
    deep = backend_data_dir / "sandboxes" / ("d" * 60) / ("e" * 60) / "deep"
    assert len(str(deep / "run" / "agent.sock").encode()) > 107  # sun_path's limit
    sandbox = await backend.create(SandboxSpec("deep", ["sleep", "60"], deep))
    try:
        assert isinstance(sandbox, BwrapSandbox)
        assert await run(sandbox, ["echo", "reached"]) == (0, "reached\n", "")
    finally:
        await backend.destroy(sandbox)


# --- restart --------------------------------------------------------------------------------------


async def test_adopt_after_a_new_backend_object(backend_data_dir: Path, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sleep", "60"], pids_max=50)
    (sandbox.spec.state_dir / "fs" / "workspace" / "kept").write_text("still here\n")
    second = BwrapBackend(backend_data_dir)
    try:
        adopted = await second.adopt(sandbox.spec)
        assert adopted is not None and second.is_alive(adopted)
        assert adopted.agent_pid == sandbox.agent_pid
        assert await run(adopted, ["cat", "/workspace/kept"]) == (0, "still here\n", "")
        await second.destroy(adopted)
        assert_gone(adopted)
    finally:
        await second.close()


async def test_adopt_of_a_dead_sandbox_cleans_up(backend_data_dir: Path, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sleep", "60"], pids_max=50)
    os.kill(sandbox.agent_pid, signal.SIGKILL)  # the whole PID namespace dies with its PID 1
    second = BwrapBackend(backend_data_dir)
    try:
        assert await second.adopt(sandbox.spec) is None
        if sandbox.cgroup is not None:
            assert all(not path.exists() for path in sandbox.cgroup.paths.values())
        assert not (sandbox.spec.state_dir / "run" / "agent.json").exists()
    finally:
        await second.close()


# --- cgroup v2 (where a v2 hierarchy is mounted next to v1, as on hybrid machines) ----------------


def _v2_layout() -> CgroupLayout | None:
    for mount_point in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        root = Path(mount_point)
        if (root / "cgroup.procs").exists() and (root / "cgroup.subtree_control").exists():
            return CgroupLayout("v2", {"unified": root}) if os.access(root, os.W_OK) else None
    return None


async def test_cgroup_v2_freeze_kill_and_degraded_limits(backend: Backend) -> None:
    layout = _v2_layout()
    if layout is None:
        pytest.skip("no writable cgroup v2 hierarchy here")
    assert isinstance(backend, BwrapBackend)
    backend._cgroups = layout  # use v2 for this backend's sandboxes
    spec_dir = backend.data_dir / "sandboxes" / "v2"
    sandbox = await backend.create(SandboxSpec("v2", ["sleep", "60"], spec_dir, memory_bytes=64 << 20))
    try:
        assert isinstance(sandbox, BwrapSandbox) and sandbox.cgroup is not None
        assert sandbox.cgroup.version == "v2" and sandbox.cgroup.contains(sandbox.agent_pid)
        available = (layout.parents["unified"] / "cgroup.controllers").read_text().split()
        assert sandbox.limits_enforced == ("memory" in available)
        if not sandbox.limits_enforced:
            assert "memory" in sandbox.limits_message
        await backend.pause(sandbox)
        assert sandbox.cgroup.is_frozen()
        await backend.resume(sandbox)
        assert await run(sandbox, ["echo", "thawed"]) == (0, "thawed\n", "")
    finally:
        await backend.destroy(sandbox)
    assert_gone(sandbox)


async def test_sees_its_own_cgroup_limits_only(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(memory_bytes=96 << 20)
    if sandbox.cgroup is None or sandbox.cgroup.version != "v1" or "memory" not in sandbox.cgroup.paths:
        pytest.skip("needs the cgroup v1 memory controller")
    code, out, _ = await run(
        sandbox, ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; ls /sys/fs/cgroup"]
    )
    limit, *hierarchies = out.split()
    assert code == 0 and int(limit) == 96 << 20
    assert not any(name.startswith("osbox-") for name in hierarchies)


async def test_a_sandbox_that_died_fails_clearly(backend: Backend, new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox(["sleep", "60"])
    waiting = await sandbox.spawn(["sleep", "60"], env={}, cwd="/")
    os.kill(sandbox.agent_pid, signal.SIGKILL)  # PID 1 dies: so does everything in the sandbox
    assert await waiting.wait() == -signal.SIGKILL
    await wait_until_async(lambda: not backend.is_alive(sandbox))
    with pytest.raises(BackendError, match="not reachable"):
        await sandbox.call("stat", paths=["/workspace"])
    await backend.destroy(sandbox)
    assert_gone(sandbox)


async def test_no_descriptor_leaks_in_the_server(backend: Backend, backend_data_dir: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def cycle(index: int) -> None:
        spec = SandboxSpec(f"fd{index}", ["sleep", "60"], backend_data_dir / "sandboxes" / f"fd{index}")
        sandbox = await backend.create(spec)
        try:
            assert isinstance(sandbox, BwrapSandbox)
            assert (await run(sandbox, ["true"]))[0] == 0
            await sandbox.call("stat", paths=["/workspace"])
            os.close(await sandbox.open_file("/workspace", os.O_RDONLY))
            with pytest.raises(SandboxOSError):
                await sandbox.connect(1)
        finally:
            await backend.destroy(sandbox)

    await cycle(0)  # warm up: executor threads, lazily opened files
    before = open_fds()
    for index in range(1, 4):
        await cycle(index)
    assert open_fds() == before
