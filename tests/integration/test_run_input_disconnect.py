"""Session runs and bash cells read a stdin like commands do, and a dropped stream kills or keeps a run
as asked, against a real `osbox serve`, on both twins (osbox's execd extensions): `run_in_session(stdin=)`,
`execute_code(stdin=)` in a bash context, `kill_on_disconnect=` per call over the server's default (on
the execd client and on `Sandbox.run`/`spawn`), and the typed error (the session left alone) from a
server without the stdin extension."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx2
import pytest

from osbox import AsyncSandbox, ExecdClient, Sandbox, StdinNotSupportedError, StreamError
from osbox._wire import ON_DISCONNECT_HEADER, STDIN_HEADER
from osbox.server import LocalServer
from tests.polling import wait_until, wait_until_async

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


def _running(sandbox: Sandbox, marker: str) -> int:
    # `pgrep -f` matches its own shell's command line too: leave that one out.
    return int(sandbox.run(f"pgrep -f -- '{marker}' | grep -vx $$ | wc -l").stdout)


def test_session_runs_and_bash_cells_read_stdin(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    session = execd.create_session()
    ran = execd.run_in_session(session, "read -r NAME; export NAME; cat", stdin="ada\nrest\xff").run()
    assert (ran.exit_code, ran.stdout) == (0, "rest\xff")
    assert execd.run_in_session(session, "echo $NAME; cat").run().stdout == "ada\n"  # no stdin: empty

    with execd.run_in_session(session, "cat; echo '<eof>'", stdin=True) as stream:
        events = iter(stream)
        assert next(events).type == "init"
        assert stream.command_id is not None  # type: ignore[attr-defined]
        execd.send_command_stdin(stream.command_id, b"typed\n", eof=True)  # type: ignore[attr-defined]
        assert "".join(e.text or "" for e in events if e.type == "stdout") == "typed\n<eof>\n"

    bash = execd.create_context("bash")
    cell = execd.execute_code("tr a-z A-Z", context_id=bash.id, language="bash", stdin=b"shout\n").run()
    assert cell.stdout == "SHOUT\n" and cell.error is None


def test_a_server_without_stdin_leaves_the_session_alone(sandbox: Sandbox) -> None:
    def as_the_reference(response: httpx2.Response) -> None:
        response.headers.pop(STDIN_HEADER, None)

    headers = dict(sandbox.execd._headers)
    http = httpx2.Client(headers=headers, event_hooks={"response": [as_the_reference]})
    with http, ExecdClient(sandbox.execd.base_url, http_client=http) as execd:
        session = execd.create_session()
        with pytest.raises(StdinNotSupportedError):
            execd.run_in_session(session, "cat", stdin=b"data").run()

        def still_there() -> bool:  # once the run the client dropped has ended (killed here)
            try:
                return execd.run_in_session(session, "echo still here").run().stdout == "still here\n"
            except StreamError as busy:
                assert "busy" in str(busy)
                return False

        wait_until(still_there, what="the session to take the next run")


def test_kill_on_disconnect_per_call(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    with execd.run_command("echo up; exec sleep 4646") as stream:
        assert (
            stream.response is not None and stream.response.headers[ON_DISCONNECT_HEADER] == "kill"
        )  # the server's default
        next(e for e in stream if e.type == "stdout")
    wait_until(lambda: _running(sandbox, "sleep 4646") == 0, what="the dropped command to be killed")

    command = "echo up; sleep 0.3; echo kept > /tmp/kept"
    with execd.run_command(command, kill_on_disconnect=False) as stream:
        assert stream.response is not None and stream.response.headers[ON_DISCONNECT_HEADER] == "keep"
        next(e for e in stream if e.type == "stdout")
    wait_until(lambda: sandbox.files.exists("/tmp/kept"), what="the kept command to finish")

    session = execd.create_session()
    with execd.run_in_session(session, "echo up; exec sleep 4747", kill_on_disconnect=True) as stream:
        next(e for e in stream if e.type == "stdout")
    wait_until(lambda: _running(sandbox, "sleep 4747") == 0, what="the dropped run to be killed")


async def test_the_async_twin(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        execd = sandbox.execd
        session = await execd.create_session()
        ran = await execd.run_in_session(session, "wc -c", stdin=b"12345").run()
        assert ran.stdout.strip() == "5"
        bash = await execd.create_context("bash")
        cell = await execd.execute_code("cat", context_id=bash.id, language="bash", stdin="in a cell").run()
        assert cell.stdout == "in a cell"

        async with execd.run_in_session(
            session, "echo up; exec sleep 4848", kill_on_disconnect=False
        ) as stream:
            async for event in stream:
                if event.type == "stdout":
                    break

        async def kept() -> bool:
            found = await sandbox.run("pgrep -f -- 'sleep 4848' | grep -vx $$ | wc -l")
            return found.stdout.strip() == "1"

        await wait_until_async(kept, what="the kept run to stay")
        await execd.delete_session(session)  # kills it


def _sleeping(sandbox: Sandbox, seconds: int) -> int:
    """How many `sleep <seconds>` processes run in the sandbox (by name: no shell that mentions it)."""
    listed = sandbox.run("pgrep -ax sleep || true").stdout.splitlines()
    return sum(line.split(maxsplit=1)[1:] == [f"sleep {seconds}"] for line in listed)


def _run_in_a_client_then_kill_it(server: LocalServer, sandbox: Sandbox, seconds: int, choice: bool) -> None:
    """`Sandbox.run("exec sleep <seconds>", kill_on_disconnect=choice)` in a client process that is
    SIGKILLed once the command runs."""
    command = f"exec sleep {seconds}"
    script = (
        "import sys; from osbox import Sandbox\n"
        "with Sandbox.connect(sys.argv[1], base_url=sys.argv[2], api_key=sys.argv[3]) as sandbox:\n"
        f"    sandbox.run(sys.argv[4], kill_on_disconnect={choice})\n"
    )
    argv = [sys.executable, "-c", script, sandbox.id, server.base_url + "/v1", API_KEY, command]
    client = subprocess.Popen(argv)
    try:
        wait_until(lambda: _sleeping(sandbox, seconds) == 1, what=f"sleep {seconds} to start")
    finally:
        client.kill()
        client.wait()


def test_sandbox_run_and_spawn_kill_on_disconnect(server: LocalServer, sandbox: Sandbox) -> None:
    _run_in_a_client_then_kill_it(server, sandbox, 5151, False)
    _run_in_a_client_then_kill_it(server, sandbox, 5252, True)
    wait_until(lambda: _sleeping(sandbox, 5252) == 0, what="the dropped command to be killed")
    assert _sleeping(sandbox, 5151) == 1  # kept

    with Sandbox.connect(sandbox.id, base_url=server.base_url + "/v1", api_key=API_KEY) as attached:
        tied = attached.spawn("exec sleep 5353", kill_on_disconnect=True)
        free = attached.spawn("exec sleep 5454")
        assert tied.status().running and free.status().running
    # The sandbox was kept (connect): the tied command went with the client, the other runs on.
    assert _sleeping(sandbox, 5353) == 0 and _sleeping(sandbox, 5454) == 1
    sandbox.run("pkill -f 'sleep 5[14]5[14]'")


async def test_the_async_sandbox_run_and_spawn_kill_on_disconnect(
    server: LocalServer, sandbox: Sandbox
) -> None:
    async with await AsyncSandbox.connect(
        sandbox.id, base_url=server.base_url + "/v1", api_key=API_KEY
    ) as attached:

        async def running(marker: str) -> int:
            listed = (await attached.run("pgrep -ax sleep || true")).stdout.splitlines()
            return sum(line.split(maxsplit=1)[1:] == [marker] for line in listed)

        dropped = asyncio.create_task(attached.run("echo up; exec sleep 5555", kill_on_disconnect=False))
        await wait_until_async(lambda: running("sleep 5555"), what="the command to start")
        dropped.cancel()  # the stream goes with the task
        with pytest.raises(asyncio.CancelledError):
            await dropped
        killed = asyncio.create_task(attached.run("echo up; exec sleep 5656", kill_on_disconnect=True))
        await wait_until_async(lambda: running("sleep 5656"), what="the command to start")
        killed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await killed

        async def gone() -> bool:
            return await running("sleep 5656") == 0

        await wait_until_async(gone, what="the dropped command to be killed")
        assert await running("sleep 5555") == 1

        tied = await attached.spawn("exec sleep 5757", kill_on_disconnect=True)
        assert (await tied.status()).running
    assert _sleeping(sandbox, 5757) == 0
    sandbox.run("pkill -f 'sleep 5555'")
