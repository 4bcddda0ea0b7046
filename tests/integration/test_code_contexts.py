"""Code contexts (`/code*`) on a real `osbox serve`: Jupyter kernels inside the sandbox, driven
through osbox's own `ExecdClient` (so both ends of the wire are exercised)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from osbox import APIStatusError, AsyncExecdClient, ExecdClient, NotFoundError, Sandbox, StreamError
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with (
        LocalServer(api_key=API_KEY) as server,
        Sandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as created,
    ):
        probe = created.run("python3 -c 'import ipykernel'")  # the sandbox's own python3
        if probe.exit_code != 0:
            pytest.skip("the sandboxes' python3 has no ipykernel (Debian: apt-get install python3-ipykernel)")
        yield created


@pytest.fixture
def execd(sandbox: Sandbox) -> ExecdClient:
    return sandbox.execd


def kernel_files(sandbox: Sandbox, context_id: str) -> list[str]:
    """What is in the sandbox's kernel directory for a context: connection files and sockets."""
    listed = sandbox.run("ls -A /tmp/.osbox/kernels").stdout.split()
    return sorted(name for name in listed if name.startswith(context_id))


def kernels_running(sandbox: Sandbox) -> int:
    # The brackets keep the shell running pgrep from matching itself.
    return int(sandbox.run("pgrep -fc '[i]pykernel_launcher' || true").stdout.strip() or 0)


def test_a_context_keeps_state_and_reports_output_results_and_errors(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    assert context.language == "python" and execd.get_context(context.id) == context

    first = execd.execute_code("x = 6 * 7\nprint('side', 'effect')\nx", context_id=context.id).run()
    assert (first.id, first.stdout, first.exit_code, first.complete) == (context.id, "side effect\n", 0, True)
    assert first.execution_count == 1
    # Both kinds of client read the result: the spec's MIME key and the reference's `text`.
    assert first.results == [{"text/plain": "42", "text": "42"}]
    assert first.results[0].text == "42" and first.results[0].data == {"text/plain": "42"}

    rich = execd.execute_code(
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\nx + 1",
        context_id=context.id,
    ).run()
    assert rich.results[0].html == "<b>bold</b>"  # display_data is kept, every MIME type
    assert rich.results[0].data["text/plain"] == rich.results[0].text == "<IPython.core.display.HTML object>"
    assert rich.results[1].text == "43"  # state survived the first cell

    failed = execd.execute_code(
        "import sys\nprint('to stderr', file=sys.stderr)\n1 / 0", context_id=context.id
    ).run()
    assert failed.stderr == "to stderr\n" and failed.complete
    assert failed.error is not None and failed.error.ename == "ZeroDivisionError" and failed.exit_code == 1
    assert any("ZeroDivisionError" in line for line in failed.error.traceback)
    execd.delete_context(context.id)


def test_interrupt_ends_the_cell_and_a_second_cell_meanwhile_is_refused(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    with execd.execute_code(
        "print('started', flush=True)\nimport time\ntime.sleep(120)", context_id=context.id
    ) as cell:
        events = iter(cell)
        for event in events:
            if event.type == "stdout" and event.text == "started\n":
                break
        with pytest.raises(StreamError, match="busy") as busy:
            execd.execute_code("1", context_id=context.id).run()
        assert busy.value.code == "RUNTIME_ERROR"
        execd.interrupt_code(context.id)
        rest = [event for event in events]
    errors = [event.error for event in rest if event.type == "error"]
    assert [error.ename for error in errors if error is not None] == ["KeyboardInterrupt"]
    assert rest[-1].type == "execution_complete"
    assert [r.text for r in execd.execute_code("'still alive'", context_id=context.id).run().results] == [
        "'still alive'"
    ]
    execd.delete_context(context.id)


def test_a_cell_right_after_a_failing_cell_always_runs(execd: ExecdClient) -> None:
    """ipykernel aborts requests that reach it just after an error (stop_on_error), silently on
    IOPub: no cell may be lost that way, nor reported as a success without having run."""
    context = execd.create_context(language="python")
    assert context.id
    for i in range(40):
        failed = execd.execute_code("1 / 0", context_id=context.id).run()
        assert failed.error is not None and failed.error.ename == "ZeroDivisionError"
        assert [r.text for r in execd.execute_code(f"{i} * 2", context_id=context.id).run().results] == [
            str(i * 2)
        ]
    execd.delete_context(context.id)


def test_contexts_are_listed_found_and_deleted_with_their_kernels(
    sandbox: Sandbox, execd: ExecdClient
) -> None:
    before = kernels_running(sandbox)
    one, two = execd.create_context(language="python"), execd.create_context(language="python")
    assert {one.id, two.id} <= {c.id for c in execd.list_contexts(language="python")}
    assert kernels_running(sandbox) == before + 2
    assert one.id
    execd.delete_context(one.id)
    with pytest.raises(NotFoundError):
        execd.get_context(one.id)
    execd.delete_contexts_by_language("python")
    assert execd.list_contexts(language="python") == []
    assert kernels_running(sandbox) == 0


def test_language_alone_uses_a_default_context_and_no_context_runs_shell(execd: ExecdClient) -> None:
    first = execd.execute_code("y = 'kept'", language="python").run()
    second = execd.execute_code("y", language="python").run()
    assert first.id == second.id and [r.text for r in second.results] == ["'kept'"]
    shell = execd.execute_code("echo shell $((40 + 2))").run()
    assert (shell.stdout, shell.exit_code) == ("shell 42\n", 0)
    with pytest.raises(APIStatusError, match="python, bash") as unsupported:
        execd.create_context(language="java")
    assert unsupported.value.status_code == 501


def test_a_kernel_that_dies_mid_cell_ends_the_cell_with_an_error(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    result = execd.execute_code("import os\nos._exit(3)", context_id=context.id).run()
    assert result.complete and result.error is not None and result.error.ename == "KernelDied"
    execd.delete_context(context.id)
    # A default context whose kernel died is replaced by a fresh one.
    dead = execd.execute_code("import os\nos._exit(3)", language="python").run()
    fresh = execd.execute_code("1 + 1", language="python").run()
    assert fresh.id != dead.id and [r.text for r in fresh.results] == ["2"]
    assert dead.id not in {c.id for c in execd.list_contexts(language="python")}


#: Holds the kernel's event loop for a moment after the cell, as a loaded machine would: the next
#: request then reaches ipykernel while it still aborts requests after an error (`stop_on_error`).
STALL = "import asyncio, time\nasyncio.get_event_loop().call_soon(time.sleep, 0.3)\n"


def test_no_cell_is_lost_right_after_errors_under_load(sandbox: Sandbox, execd: ExecdClient) -> None:
    """Cells sent right after cells that raised, from several contexts at once while every cpu of
    the sandbox is busy and each kernel's event loop stalls right after the error (see `STALL`):
    each cell runs and reports its own value, none is dropped, aborted or reported as a success."""
    burners = [sandbox.spawn("python3 -c 'while True: pass'") for _ in range(2)]
    contexts = [execd.create_context(language="python").id for _ in range(4)]
    try:

        def rounds(context_id: str | None) -> list[str]:
            lost: list[str] = []
            for i in range(12):
                failed = execd.execute_code(STALL + f"raise ValueError({i})", context_id=context_id).run()
                if failed.error is None or failed.error.ename != "ValueError":
                    lost.append(f"failing cell {i}: {failed}")
                cell = execd.execute_code(f"print('ran', {i})\n{i} * 2", context_id=context_id).run()
                if (cell.error, cell.stdout, [r.text for r in cell.results]) != (
                    None,
                    f"ran {i}\n",
                    [str(i * 2)],
                ):
                    lost.append(f"cell {i} after an error: {cell}")
            return lost

        with ThreadPoolExecutor(len(contexts)) as pool:
            lost = [line for found in pool.map(rounds, contexts) for line in found]
        assert lost == []
    finally:
        for burner in burners:
            burner.kill()
        for context_id in contexts:
            assert context_id
            execd.delete_context(context_id)


def test_a_cell_past_its_timeout_is_interrupted_and_says_timeout(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    slow = execd.execute_code(
        "counter = 1\nprint('before', flush=True)\nimport time\ntime.sleep(120)",
        context_id=context.id,
        timeout=0.5,
    ).run()
    assert slow.complete and slow.stdout == "before\n" and slow.exit_code == 1
    assert slow.error is not None and slow.error.ename == "Timeout" and "timeout" in slow.error.evalue
    assert slow.timed_out and slow.signal is None
    # The kernel was interrupted, not restarted: the context and its state live on.
    assert [r.text for r in execd.execute_code("counter + 1", context_id=context.id).run().results] == ["2"]
    execd.delete_context(context.id)


def test_a_kernel_that_ignores_the_interrupt_is_restarted(sandbox: Sandbox, execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    before = kernels_running(sandbox)
    first_files = kernel_files(sandbox, context.id)
    assert f"{context.id}.json" in first_files and len(first_files) == 6  # the file, 5 sockets
    stubborn = (
        "counter = 1\nimport signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(120)"
    )
    with execd.execute_code(stubborn, context_id=context.id, language="python", timeout=0.5) as stream:
        events = list(stream)
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and errors[0].error is not None and errors[0].error.ename == "Timeout"
    assert "restarted" in errors[0].error.evalue and (errors[0].extra or {}).get("restarted") is True
    assert events[-1].type == "execution_complete"  # the cell is over: the context takes the next one
    assert (errors[0].extra or {}).get("timed_out") is True
    # A fresh kernel in the same context: its state is gone, it runs cells, the old one is dead.
    gone = execd.execute_code("counter", context_id=context.id, language="python").run()
    assert gone.error is not None and gone.error.ename == "NameError"
    assert execd.execute_code("6 * 7", context_id=context.id, language="python").run().results[0].text == "42"
    assert execd.get_context(context.id).id == context.id
    assert kernels_running(sandbox) == before
    # The dead kernel's connection file and sockets are gone; the new kernel's are there.
    second_files = kernel_files(sandbox, context.id)
    assert f"{context.id}-1.json" in second_files and len(second_files) == 6
    assert not set(first_files) & set(second_files)
    execd.delete_context(context.id)
    assert kernels_running(sandbox) == before - 1
    assert kernel_files(sandbox, context.id) == []  # nothing of the context is left


def test_a_bash_context_keeps_exports_and_cwd_and_reports_exit_and_timeout(execd: ExecdClient) -> None:
    context = execd.create_context(language="bash")
    assert context.id and context.language == "bash"
    assert context in execd.list_contexts(language="bash")
    first = execd.execute_code(
        "export GREETING=hi\ncd /tmp\necho one; echo two >&2", context_id=context.id
    ).run()
    assert (first.id, first.stdout, first.exit_code, first.complete) == (context.id, "one\ntwo\n", 0, True)
    second = execd.execute_code('echo "$GREETING from $(pwd)"; exit 3', context_id=context.id).run()
    assert second.stdout == "hi from /tmp\n" and second.exit_code == 3
    assert second.error is not None and second.error.ename == "CommandExecError" and second.complete
    slow = execd.execute_code("echo start; sleep 120", context_id=context.id, timeout=0.5).run()
    assert slow.stdout == "start\n" and slow.error is not None and slow.error.ename == "Timeout"
    assert slow.timed_out and not second.timed_out
    assert execd.execute_code("echo $GREETING", language="bash").run().stdout == "\n"  # the default context
    execd.delete_context(context.id)
    with pytest.raises(NotFoundError):
        execd.get_context(context.id)


# --- python cells: stdin for input(), and a client that leaves ------------------------------------------


def test_input_in_a_python_cell_reads_the_cells_stdin(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    code = "name = input('name? ')\nrest = input()\nprint(name.upper(), rest)"
    fed = execd.execute_code(code, context_id=context.id, language="python", stdin="ada\nlove lace\n").run()
    assert (fed.stdout, fed.error) == ("name? ADA love lace\n", None)  # the prompt shows, as on a terminal
    ended = execd.execute_code("input()", context_id=context.id, language="python", stdin=b"").run()
    assert ended.error is not None and ended.error.ename == "EOFError"  # the end of the stdin

    # Fed while it runs, through the cell's id, as a command's stdin is.
    with execd.execute_code(
        "total = int(input('n> ')) * 2\nprint('got', total)",
        context_id=context.id,
        language="python",
        stdin=True,
    ) as stream:
        events = iter(stream)
        assert next(e for e in events if e.type == "stdout").text == "n> "
        cell_id = stream.command_id  # type: ignore[attr-defined]
        assert cell_id is not None and cell_id.startswith(context.id)
        execd.send_command_stdin(cell_id, b"21\n")
        assert [e.text for e in events if e.type == "stdout"] == ["got 42\n"]
    with pytest.raises(APIStatusError) as closed:  # the cell is over: so is its stdin
        execd.send_command_stdin(cell_id, b"late\n")
    assert closed.value.status_code == 409

    # Without a stdin, input() fails at once and says how to give it one.
    bare = execd.execute_code("input('never answered')", context_id=context.id, language="python").run()
    assert bare.error is not None and bare.error.ename == "StdinNotImplementedError"
    assert "stdin" in bare.error.evalue and bare.complete
    assert execd.execute_code("total", context_id=context.id, language="python").run().results[0].text == "42"
    execd.delete_context(context.id)


def _drop_after_start(execd: ExecdClient, context_id: str, code: str, keep: bool | None = None) -> None:
    """Start `code` (which prints `up` first), then leave its stream."""
    with execd.execute_code(
        code, context_id=context_id, language="python", kill_on_disconnect=keep
    ) as stream:
        next(e for e in stream if e.type == "stdout" and e.text == "up\n")


def _next_cell_runs(execd: ExecdClient, context_id: str, code: str) -> str | None:
    try:
        result = execd.execute_code(code, context_id=context_id, language="python").run()
    except StreamError as busy:
        assert "busy" in str(busy)
        return None
    return result.results[0].text if result.results else ""


def test_a_python_cell_whose_client_leaves_is_interrupted_unless_kept(
    sandbox: Sandbox, execd: ExecdClient
) -> None:
    context_id = execd.create_context(language="python").id
    assert context_id is not None
    _drop_after_start(execd, context_id, "state = 7\nimport time\nprint('up', flush=True)\ntime.sleep(300)")
    # Interrupted: the context takes the next cell, its state intact (the kernel was not restarted).
    assert wait_until(lambda: _next_cell_runs(execd, context_id, "state * 6"), what="the next cell") == "42"

    kept = "import time\nprint('up', flush=True)\ntime.sleep(1.5)\nstate = 8"
    _drop_after_start(execd, context_id, kept, keep=False)
    assert wait_until(lambda: _next_cell_runs(execd, context_id, "state"), what="the kept cell's end") == "8"

    # A kernel that ignores the interrupt is restarted, as after a timeout.
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('up', flush=True)\n"
    _drop_after_start(execd, context_id, stubborn + "time.sleep(300)")
    restarted = wait_until(
        lambda: _next_cell_runs(execd, context_id, "'state' in dir()"), what="a fresh kernel"
    )
    assert restarted == "False"
    execd.delete_context(context_id)


async def test_the_async_twin_feeds_input_and_reports_timeouts(sandbox: Sandbox) -> None:
    server_url = sandbox.execd.base_url
    async with AsyncExecdClient(server_url, headers=dict(sandbox.execd._headers)) as execd:
        context = await execd.create_context("python")
        assert context.id
        fed = await execd.execute_code(
            "print(input() * 2)", context_id=context.id, language="python", stdin=b"ab\n"
        ).run()
        assert fed.stdout == "abab\n"
        slow = await execd.execute_code(
            "import time\ntime.sleep(60)", context_id=context.id, language="python", timeout=0.3
        ).run()
        assert slow.timed_out and slow.error is not None and slow.error.ename == "Timeout"
        bash = await execd.create_context("bash")
        slow_bash = await execd.execute_code(
            "sleep 60", context_id=bash.id, language="bash", timeout=0.3
        ).run()
        assert slow_bash.timed_out
        await execd.delete_context(context.id)
        assert bash.id is not None
        await execd.delete_context(bash.id)
