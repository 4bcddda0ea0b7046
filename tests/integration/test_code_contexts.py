"""Code contexts (`/code*`) on a real `osbox serve`: Jupyter kernels inside the sandbox, driven
through osbox's own `ExecdClient` (so both ends of the wire are exercised)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from osbox import APIStatusError, ExecdClient, NotFoundError, Sandbox, StreamError
from osbox.server import LocalServer

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


def kernels_running(sandbox: Sandbox) -> int:
    # The brackets keep the shell running pgrep from matching itself.
    return int(sandbox.run("pgrep -fc '[i]pykernel_launcher' || true").stdout.strip() or 0)


def test_a_context_keeps_state_and_reports_output_results_and_errors(execd: ExecdClient) -> None:
    context = execd.create_context(language="python")
    assert context.id
    assert context.language == "python" and execd.get_context(context.id) == context

    first = execd.execute_code("x = 6 * 7\nprint('side', 'effect')\nx", context_id=context.id).run()
    assert (first.id, first.stdout, first.exit_code, first.complete) == (context.id, "side effect\n", 0, True)
    assert first.results == [{"text": "42"}] and first.execution_count == 1

    rich = execd.execute_code(
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\nx + 1",
        context_id=context.id,
    ).run()
    assert {"text/html": "<b>bold</b>"}.items() <= rich.results[0].items()  # display_data is kept
    assert rich.results[1] == {"text": "43"}  # state survived the first cell

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
    assert execd.execute_code("'still alive'", context_id=context.id).run().results == [
        {"text": "'still alive'"}
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
        assert execd.execute_code(f"{i} * 2", context_id=context.id).run().results == [{"text": str(i * 2)}]
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
    assert first.id == second.id and second.results == [{"text": "'kept'"}]
    shell = execd.execute_code("echo shell $((40 + 2))").run()
    assert (shell.stdout, shell.exit_code) == ("shell 42\n", 0)
    with pytest.raises(APIStatusError, match="python") as unsupported:
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
    assert fresh.id != dead.id and fresh.results == [{"text": "2"}]
    assert dead.id not in {c.id for c in execd.list_contexts(language="python")}
