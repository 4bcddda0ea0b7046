"""osbox's own clients against a real `osbox serve`: every execd operation, limits, isolation, cleanup.

The lifecycle and execd suites test each API on its own; this one goes through the whole stack the way
a user does: `LifecycleClient` → endpoint → `ExecdClient.from_endpoint` → a sandbox process tree.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from osbox import (
    APIError,
    AsyncExecdClient,
    AsyncLifecycleClient,
    CommandLogs,
    ConflictError,
    ExecdClient,
    FileUpload,
    LifecycleClient,
    NotFoundError,
    StreamError,
    output_is_exact,
)
from osbox.models import CreateSandboxResponse
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def lifecycle(server: LocalServer) -> Iterator[LifecycleClient]:
    with LifecycleClient(server.base_url + "/v1", api_key=API_KEY) as client:
        yield client


def _create(
    lifecycle: LifecycleClient,
    *,
    resource_limits: dict[str, str] | None = None,
    **fields: Any,
) -> CreateSandboxResponse:
    return lifecycle.create_sandbox(
        image="python:3.11",
        entrypoint=["tail", "-f", "/dev/null"],
        timeout=600,
        resource_limits={"cpu": "1", "memory": "512Mi"} if resource_limits is None else resource_limits,
        **fields,
    )


@pytest.fixture
def sandbox(lifecycle: LifecycleClient) -> Iterator[CreateSandboxResponse]:
    created = _create(lifecycle)
    yield created
    lifecycle.delete_sandbox(created.id)


@pytest.fixture
def execd(lifecycle: LifecycleClient, sandbox: CreateSandboxResponse) -> Iterator[ExecdClient]:
    with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772)) as client:
        yield client


def test_commands_stream_fold_and_report_exit_codes(execd: ExecdClient) -> None:
    execd.ping()
    with execd.run_command("printf 'a\\n\\nb'; echo err >&2", framing="lines") as stream:
        events = list(stream)
    assert events[0].type == "init"
    assert [e.text for e in events if e.type == "stdout"] == ["a", "\n", "b"]  # the reference's framing
    with execd.run_command("printf 'a\\n\\nb'") as stream:
        events = list(stream)
        assert output_is_exact(stream.response)
    assert "".join(e.text or "" for e in events if e.type == "stdout") == "a\n\nb"  # as written
    result = execd.run_command("echo $GREETING from $(pwd)", cwd="/tmp", envs={"GREETING": "hi"}).run()
    assert (result.stdout, result.exit_code) == ("hi from /tmp\n", 0)
    failed = execd.run_command("exit 7").run()
    assert failed.exit_code == 7
    assert failed.error is not None and failed.error.ename == "CommandExecError"
    killed = execd.run_command("sleep 30", timeout=0.5).run()
    assert (killed.exit_code, killed.signal, killed.timed_out) == (137, "SIGKILL", True)


def test_background_command_status_logs_and_interrupt(execd: ExecdClient) -> None:
    started = execd.run_command("for i in 1 2 3; do echo line$i; done; exec sleep 300", background=True).run()
    assert started.id

    def output_so_far() -> CommandLogs | None:
        got = execd.get_command_logs(started.id or "")
        return got if "line3" in got.text else None

    logs = wait_until(output_so_far, what="background output")
    assert logs.text.splitlines()[:3] == ["line1", "line2", "line3"]
    more = execd.get_command_logs(started.id, cursor=logs.cursor)
    assert more.text == ""
    assert execd.get_command_status(started.id).running is True
    execd.interrupt_command(started.id)
    status = execd.get_command_status(started.id)
    assert status.running is False
    with pytest.raises(NotFoundError):
        execd.get_command_status("0" * 32)


def test_sessions_keep_exported_env_and_cwd(execd: ExecdClient) -> None:
    session = execd.create_session(cwd="/workspace")
    execd.run_in_session(session, "export PROJECT=osbox; mkdir -p app && cd app").run()
    result = execd.run_in_session(session, "echo $PROJECT in $(pwd)").run()
    assert result.stdout == "osbox in /workspace/app\n"
    execd.delete_session(session)
    with pytest.raises((NotFoundError, StreamError)):
        execd.run_in_session(session, "true").run()


def test_files_and_directories(execd: ExecdClient, tmp_path: Path) -> None:
    execd.create_directory("/workspace/data/nested", mode=0o750)
    listed = execd.list_directory("/workspace/data", depth=2)
    assert [f.path for f in listed] == ["/workspace/data/nested"]
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, streamed from disk
    execd.upload_file("/workspace/data/big.bin", local, mode=0o600)
    execd.upload_files(
        [
            FileUpload("/workspace/data/a.txt", b"alpha beta alpha\n"),
            FileUpload("/workspace/data/nested/b.txt", b"bravo\n", mode=0o644),
        ]
    )
    info = execd.get_file_info(["/workspace/data/big.bin", "/workspace/data/a.txt"])
    assert info["/workspace/data/big.bin"].size == 1024 * 1024
    assert info["/workspace/data/big.bin"].mode == 600
    downloaded = tmp_path / "back.bin"
    execd.download_file("/workspace/data/big.bin", downloaded)
    assert hashlib.sha256(downloaded.read_bytes()).digest() == hashlib.sha256(local.read_bytes()).digest()
    part = io.BytesIO()
    result = execd.download_file("/workspace/data/big.bin", part, range=(256, 511))
    assert result.partial and part.getvalue() == bytes(range(256))
    assert execd.replace_in_files({"/workspace/data/a.txt": ("alpha", "omega")}, verbose=True) == {
        "/workspace/data/a.txt": 2
    }
    assert execd.read_file("/workspace/data/a.txt") == b"omega beta omega\n"
    found = execd.search_files("/workspace/data", pattern="*.txt")
    assert sorted(f.path for f in found) == ["/workspace/data/a.txt", "/workspace/data/nested/b.txt"]
    execd.move_files([("/workspace/data/a.txt", "/workspace/moved/a.txt")])
    execd.set_permissions({"/workspace/moved/a.txt": 0o640})
    assert execd.get_file_info("/workspace/moved/a.txt")["/workspace/moved/a.txt"].mode == 640
    execd.delete_files(["/workspace/moved/a.txt", "/workspace/never-existed"])
    execd.delete_directory("/workspace/data")
    with pytest.raises(NotFoundError):
        execd.get_file_info("/workspace/data")


def test_paths_stay_inside_the_sandbox_view(execd: ExecdClient) -> None:
    execd.run_command("ln -s /etc/shadow /workspace/shadow-link").run()
    for path in ("/etc/shadow", "/workspace/shadow-link", "/workspace/../etc/shadow"):
        with pytest.raises((NotFoundError, Exception)) as caught:
            execd.read_file(path)
        assert getattr(caught.value, "status_code", 0) >= 400, path
    with pytest.raises(Exception) as caught:
        execd.upload_file("/usr/osbox-was-here", b"x")
    assert getattr(caught.value, "status_code", 0) >= 400


def test_metrics_and_watch(execd: ExecdClient) -> None:
    metrics = execd.get_metrics()
    assert metrics.cpu_count > 0 and metrics.mem_total_mib > 0
    with execd.watch_metrics() as stream:
        first = next(iter(stream))
    assert first.mem_total_mib == metrics.mem_total_mib


def test_code_contexts_in_other_languages_answer_not_supported(execd: ExecdClient) -> None:
    # python contexts are real kernels: tests/integration/test_code_contexts.py
    with pytest.raises(APIError, match="python") as caught:
        execd.create_context("java")
    assert getattr(caught.value, "status_code", None) == 501


def test_isolation_through_the_api(lifecycle: LifecycleClient, execd: ExecdClient) -> None:
    identity = execd.run_command("id -u; hostname; ps -e --no-headers | wc -l").run().stdout.split()
    assert identity[0] != "0"
    assert identity[1] == "sandbox"
    assert int(identity[2]) < 10  # its own PID namespace: no host processes
    assert execd.run_command("touch /usr/x").run().exit_code != 0
    execd.upload_file("/workspace/secret.txt", b"mine")
    other = _create(lifecycle)
    try:
        with ExecdClient.from_endpoint(lifecycle.get_endpoint(other.id, 44772)) as neighbour:
            looked = neighbour.run_command("cat /workspace/secret.txt").run()
            assert looked.exit_code != 0 and "mine" not in looked.stdout
    finally:
        lifecycle.delete_sandbox(other.id)


def test_memory_hog_is_killed_and_the_sandbox_lives_on(lifecycle: LifecycleClient) -> None:
    small = _create(lifecycle, resource_limits={"cpu": "1", "memory": "64Mi"})
    try:
        with ExecdClient.from_endpoint(lifecycle.get_endpoint(small.id, 44772)) as execd:
            hog = execd.run_command("python3 -c 'x = bytearray(512 * 1024 * 1024)'").run()
            assert hog.exit_code != 0
            assert execd.run_command("echo still alive").run().stdout == "still alive\n"
    finally:
        lifecycle.delete_sandbox(small.id)


def test_fork_bomb_is_contained_and_the_sandbox_lives_on(lifecycle: LifecycleClient) -> None:
    sandbox = _create(lifecycle)
    try:
        with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772)) as execd:
            # The bomb's processes share the command's process group; the timeout kills the group.
            bomb = execd.run_command("b() { b | b & }; b; sleep 600", timeout=3).run()
            assert (bomb.exit_code, bomb.timed_out) == (137, True)

            def answers() -> bool:
                try:
                    return execd.run_command("echo still alive").run().stdout == "still alive\n"
                except APIError:
                    return False  # at its pids limit the agent refuses work until the bomb is gone

            assert wait_until(answers, what="the sandbox to answer again after the fork bomb")
    finally:
        lifecycle.delete_sandbox(sandbox.id)


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def test_delete_kills_the_whole_tree(lifecycle: LifecycleClient) -> None:
    doomed = _create(lifecycle)
    marker = f"{uuid.uuid4().int % 10**6}.25"
    with ExecdClient.from_endpoint(lifecycle.get_endpoint(doomed.id, 44772)) as execd:
        execd.run_command(f"(sleep {marker} &) ; sleep {marker}", background=True).run()
        wait_until(lambda: len(_host_processes_with(f"sleep {marker}")) >= 2, what="sleepers")
    lifecycle.delete_sandbox(doomed.id)
    assert _host_processes_with(f"sleep {marker}") == []
    with pytest.raises(NotFoundError):
        lifecycle.get_sandbox(doomed.id)


def test_pause_freezes_and_resume_thaws(
    lifecycle: LifecycleClient, sandbox: CreateSandboxResponse, execd: ExecdClient
) -> None:
    lifecycle.pause_sandbox(sandbox.id)
    assert wait_until(lambda: lifecycle.get_sandbox(sandbox.id).status.state == "Paused", what="Paused")
    with pytest.raises(ConflictError):
        lifecycle.pause_sandbox(sandbox.id)
    lifecycle.resume_sandbox(sandbox.id)
    assert wait_until(lambda: lifecycle.get_sandbox(sandbox.id).status.state == "Running", what="Running")
    assert execd.run_command("echo back").run().stdout == "back\n"


@pytest.fixture
async def alifecycle(server: LocalServer) -> AsyncIterator[AsyncLifecycleClient]:
    async with AsyncLifecycleClient(server.base_url + "/v1", api_key=API_KEY) as client:
        yield client


async def test_async_twins_end_to_end(alifecycle: AsyncLifecycleClient) -> None:
    created = await alifecycle.create_sandbox(
        image="python:3.11", entrypoint=["tail", "-f", "/dev/null"], timeout=None, metadata={"twin": "async"}
    )
    try:
        assert created.expires_at is None
        async with AsyncExecdClient.from_endpoint(await alifecycle.get_endpoint(created.id, 44772)) as execd:
            lines: list[str] = []
            async with execd.run_command("seq 3") as stream:
                async for event in stream:
                    if event.type == "stdout" and event.text:
                        lines.append(event.text)
            assert "".join(lines) == "1\n2\n3\n"  # exact framing: the output as written
            await execd.upload_file("/workspace/a.txt", b"async bytes")
            assert await execd.read_file("/workspace/a.txt") == b"async bytes"
        ids = [s.id async for s in alifecycle.iter_sandboxes(metadata={"twin": "async"})]
        assert ids == [created.id]
    finally:
        await alifecycle.delete_sandbox(created.id)


def test_workload_is_oom_killable_while_the_agent_is_protected(execd: ExecdClient) -> None:
    scores = execd.run_command("cat /proc/1/oom_score_adj /proc/self/oom_score_adj").run().stdout.split()
    if scores[0] != "-1000":
        pytest.skip("the server may not lower oom_score_adj here (no CAP_SYS_RESOURCE): agent not protected")
    assert scores[1] == "0"
