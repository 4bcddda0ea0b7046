"""Code contexts (`/code*`): one Jupyter kernel per context, running inside the sandbox.

A context is an `ipykernel` started through the backend like a background command, as the sandbox
user, in the sandbox's own view:

    bash -c 'mkdir -p /tmp/.osbox/kernels && exec python3 -m ipykernel_launcher \\
             -f /tmp/.osbox/kernels/<id>.json --IPKernelApp.transport=ipc --ip=/tmp/.osbox/kernels/<id>'

It talks ZMQ over unix sockets (`transport=ipc`) in that directory, so it needs no network: the
server opens the directory inside the sandbox (`open_file`, an fd), then the connection file
(ports and HMAC key, written by the kernel itself) and each socket beneath that fd, refusing
symlinks and anything the sandbox's own uids did not make (`kernel_files`), and connects
`jupyter_client` to `/proc/self/fd/<socket fd>`.

Cells (`POST /code`) follow the reference (wire-behaviour §1.8): `init{text=context id}`, the
kernel's stdout/stderr chunks as they come, `execution_count` and `result` for an `execute_result`,
`error{ename, evalue, traceback}` for an exception, then always `execution_complete`. A result's
bundle keeps every MIME type under the spec's keys (`text/plain`, `text/html`, `image/png`, ...)
and `text/plain` also under the reference's `text`, so clients of either read it. Unlike the
reference, `display_data` (plots, HTML) is kept too, as a `result`. One cell at a time per context:
a concurrent one gets `init` and then a bare "busy" error. `DELETE /code?id=` interrupts the
running cell (SIGINT: it ends with a `KeyboardInterrupt` error). A cell runs in its own task; a
client that leaves its stream has it interrupted the same way (`disconnect`: the server's
`--kill-on-disconnect` default or the request's `OSBOX-ON-DISCONNECT: kill`; with `keep` it runs on).

stdin (`OSBOX-STDIN: pipe`, as for commands: see `stdin`): the response names the cell
(`OSBOX-COMMAND-ID: <context id>-<hex>`), and each `input()`/`getpass()` in the cell reads the next
line written to `POST /command/{cell id}/stdin` (its prompt is sent as stdout; the pipe's end raises
`EOFError`). Without the header, `input()` fails at once (`StdinNotImplementedError`, with a hint).
Python's `sys.stdin` is the kernel's own, not this pipe.

No cell is lost: each is sent with `stop_on_error=False` (ipykernel otherwise aborts, silently on
IOPub, the requests that reach it just after a cell that raised) and a cell ends only on both its
IOPub `idle` and its shell `execute_reply`, whose status decides: `aborted` or `error` without a
traceback on IOPub still becomes an `error` event (see `_run_cell`).

osbox extension: `timeout` (milliseconds, as in `POST /command`) in the `/code` body; none by
default (a kernel's cell may legitimately run for hours, and `DELETE /code?id=` stops one). A cell
past it is interrupted (SIGINT to the kernel; the context and its state stay) and ends with an
`error{ename: "Timeout"}` instead of the `KeyboardInterrupt`, then `execution_complete`. A kernel
that ignores the interrupt (code that catches KeyboardInterrupt, or sits in a C call that never
returns to Python) would stay busy forever: after `KERNEL_INTERRUPT_GRACE_S` more the kernel is
killed and a fresh one started in its place (same context id, empty state), and the cell ends with
the `Timeout` error saying so, `restarted: true` beside it, then `execution_complete`.

Languages: `python` (a Jupyter kernel) and `bash` (a bash session behind the context API, see
`bash_context`). With neither a context id nor a language, `/code` runs the code as a shell command,
as the reference does. The sandbox's `python3` must have `ipykernel` (Debian's `python3-ipykernel`);
when it has not, creating a python context says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from osbox.server._logtail import tail

from .bash_context import BashContext, ContextBase, cell_error, timeout_error
from .commands import DEFAULT_CWD, new_id, resolve_cwd, spawn_or_fail
from .disconnect import kill_wanted, stop_on_disconnect
from .errors import (
    MISSING_QUERY,
    NOT_SUPPORTED,
    RUNTIME_ERROR,
    ExecdError,
    bad_request,
    error_event,
    in_sandbox,
)
from .inputs import (
    MAX_TIMEOUT_MS,
    json_body,
    json_object,
    optional_int,
    optional_str,
    query_one,
    sandbox_of,
)
from .kernel_files import KernelFiles, confined_client
from .runner import Execution, RunSpec
from .state import SandboxApi
from .stdin import PipeLines, StdinPipe, announce_pipe, pipe_for
from .streaming import EventChannel, event_response, frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from osbox.server._backend.base import SandboxHandle

    from .state import SandboxState, StateStore

__all__ = ["AnyContext", "CodeApi", "CodeContext"]

KERNEL_DIR = "/tmp/.osbox/kernels"  # noqa: S108 (inside the sandbox: its own private /tmp)
LANGUAGES = ("python", "bash")
#: How long a new kernel may take to write its connection file and answer.
KERNEL_START_TIMEOUT_S = 60.0
#: After a cell's timeout, how long the kernel has to act on the interrupt before it is restarted.
KERNEL_INTERRUPT_GRACE_S = 3.0
_NO_STDIN_HINT = (
    "(osbox: this cell was sent without a stdin; send it with 'OSBOX-STDIN: pipe', e.g. "
    "execute_code(..., stdin=...) in osbox's SDK, and feed input() through POST /command/{cell id}/stdin)"
)
_KERNEL_SCRIPT = (
    'mkdir -p "$1" && exec env -u JPY_PARENT_PID python3 -m ipykernel_launcher '
    '-f "$1/$2.json" --IPKernelApp.transport=ipc --ip="$1/$2"'
)


@dataclass
class CodeContext(ContextBase):
    """A live kernel: its process, the client connected to it, and the cell running in it."""

    id: str
    language: str
    kernel: Execution
    client: Any  # jupyter_client.asynchronous.AsyncKernelClient
    files: KernelFiles  # the kernel directory and sockets, opened by the server itself
    log_path: Path  # the kernel's output, on the host
    cwd: str = DEFAULT_CWD
    cell: asyncio.Task[None] | None = None
    #: The running (or last) cell, as `/command/{id}/stdin|signal` and `DELETE /command` find it.
    run: PythonCell | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restarts: int = 0

    @property
    def alive(self) -> bool:
        """False once the kernel has exited."""
        return self.kernel.running

    def interrupt(self) -> None:
        """SIGINT to the kernel: the running cell ends with a `KeyboardInterrupt` error."""
        process = self.kernel.process
        if process is not None and self.kernel.running:
            process.signal_group(signal.SIGINT)

    async def start_cell(self, request: Request, code: str, timeout_s: float | None) -> EventChannel:
        """Send `code` to the kernel as the next cell; its events come on the returned channel. With
        `OSBOX-STDIN: pipe` the cell's `input()` reads lines from a pipe (see `PythonCell`)."""
        channel = EventChannel()
        self.run = run = PythonCell(self, pipe_for(request.headers))

        async def restart() -> None:
            await self.restart(request)

        self.cell = asyncio.create_task(
            _run_cell(self, run, code, channel, timeout_s, restart), name=f"osbox-cell-{self.id}"
        )
        return channel

    def answer(self, response: Response, *, kill: bool) -> Response:
        """The running cell's stream as sent: its stdin pipe announced, interrupted if the client leaves."""
        run = self.run
        assert run is not None
        if run.stdin is not None:
            announce_pipe(response, run.id)
        return stop_on_disconnect(response, lambda: run.running, run.dropped.set, kill=kill)

    async def restart(self, request: Request) -> None:
        """Kill the kernel and start a fresh one in its place: same context id, empty state. If
        the new one fails to start, the context is left dead (`alive` False) and this raises."""
        self._stop_kernel_client()
        await self.kernel.kill()
        self.files.remove()
        self.restarts += 1
        name = f"{self.id}-{self.restarts}"  # new names: nothing of the dead kernel's is reused
        self.log_path = self.log_path.with_name(f"kernel-{name}.log")
        self.kernel, self.client, self.files = await launch_kernel(
            request, self.language, name, self.cwd, self.log_path
        )

    def _stop_kernel_client(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_channels()

    async def close(self) -> None:
        """Stop the cell, the client and the kernel; remove the kernel's files, release the directory."""
        if self.cell is not None:
            self.cell.cancel()
        if self.run is not None:
            self.run.finish()  # its task may be cancelled before it ever ran (and closed the pipe)
        self._stop_kernel_client()
        await self.kernel.kill()
        self.files.remove()


class PythonCell:
    """One python cell as `/command/{id}/...` sees a run: its `id` (`<context id>-<hex>`), its
    `stdin` pipe when the request asked for one (`OSBOX-STDIN: pipe`: each `input()` in the cell
    takes the next line written to it; at its end, `EOFError`), and the kernel's `process` for
    signals. `dropped` is set when its client leaves (`kill_on_disconnect`): the cell is interrupted."""

    def __init__(self, context: CodeContext, stdin: StdinPipe | None) -> None:
        self.id = f"{context.id}-{secrets.token_hex(4)}"
        self.stdin = stdin
        self.lines = PipeLines(stdin) if stdin is not None else None
        self.dropped = asyncio.Event()
        self.done = False
        self._context = context

    @property
    def process(self) -> Any:
        """The kernel's process (a signal for the cell goes to it)."""
        return self._context.kernel.process

    @property
    def running(self) -> bool:
        """True until the cell is over."""
        return not self.done

    async def interrupt(self) -> None:
        """`DELETE /command?id=<cell id>`: SIGINT to the kernel (the cell ends with KeyboardInterrupt)."""
        if self.running:
            self._context.interrupt()

    def finish(self) -> None:
        """The cell is over: its stdin is closed (writers get `STDIN_CLOSED`). Idempotent."""
        self.done = True
        if self.lines is not None:
            self.lines.close()
        if self.stdin is not None:
            self.stdin.close()


#: A code context of either kind: a Jupyter kernel (python) or a bash session (bash).
AnyContext = CodeContext | BashContext


class CodeApi(SandboxApi):
    """The code endpoints, over the service's per-sandbox state.

    `run_shell(request, code)` answers `/code` calls with neither a context id nor a language.
    """

    def __init__(self, store: StateStore, run_shell: Callable[[Request, str], Awaitable[Response]]) -> None:
        super().__init__(store)
        self._run_shell = run_shell

    def _context(self, request: Request, context_id: str) -> AnyContext:
        return self._find(self._state(request).contexts, context_id, "code context")

    # -- contexts --

    async def create(self, request: Request) -> Response:
        """`POST /code/context {language, cwd?}` → `{id, language}` once the kernel answers."""
        body = json_object(await json_body(request))
        language = _language(body.get("language"))
        cwd_arg = optional_str(body.get("cwd"), "cwd")
        cwd = await resolve_cwd(request, cwd_arg) if cwd_arg else DEFAULT_CWD
        context = await self._start(request, language, cwd)
        return JSONResponse(context.to_wire())

    async def list(self, request: Request) -> Response:
        """`GET /code/contexts?language=` → `[{id, language}]` (all when no language is given)."""
        language = request.query_params.get("language") or None
        contexts = self._state(request).contexts.values()
        return JSONResponse([c.to_wire() for c in contexts if language in (None, c.language)])

    async def get(self, request: Request) -> Response:
        """`GET /code/contexts/{id}` → `{id, language}`."""
        return JSONResponse(self._context(request, request.path_params["id"]).to_wire())

    async def delete(self, request: Request) -> Response:
        """`DELETE /code/contexts/{id}`: the kernel is shut down."""
        context = self._context(request, request.path_params["id"])
        await self._drop(self._state(request), context)
        return Response(status_code=200)

    async def delete_language(self, request: Request) -> Response:
        """`DELETE /code/contexts?language=`: every context of that language."""
        language = request.query_params.get("language")
        if not language:
            raise ExecdError(400, MISSING_QUERY, "missing query parameter 'language'")
        state = self._state(request)
        for context in [c for c in state.contexts.values() if c.language == language]:
            await self._drop(state, context)
        return Response(status_code=200)

    # -- cells --

    async def run(self, request: Request) -> Response:
        """`POST /code {code, context: {id?, language?}}`: the cell's events, streamed."""
        body = json_object(await json_body(request))
        code = body.get("code")
        if not isinstance(code, str) or not code:
            raise bad_request("'code' must be a non-empty string")
        target = body.get("context")
        target = json_object(target, "'context'") if target is not None else {}
        timeout_ms = optional_int(body.get("timeout"), "timeout", maximum=MAX_TIMEOUT_MS)
        timeout_s = timeout_ms / 1000 if timeout_ms else None
        context_id = optional_str(target.get("id"), "context.id")
        language = optional_str(target.get("language"), "context.language")
        if context_id:
            context = self._context(request, context_id)
        elif language:
            context = await self._default(request, _language(language))
        else:
            return await self._run_shell(request, code)  # the reference runs it as a shell command

        kill = kill_wanted(request.headers, self._state(request).limits.kill_on_disconnect)
        init = frame("init", text=context.id)
        async with context.lock:
            if context.busy:
                busy = ExecdError(500, RUNTIME_ERROR, f"code context {context.id} is busy running a cell")
                return event_response(init, None, error_event(busy))
            channel = await context.start_cell(request, code, timeout_s)
        return context.answer(event_response(init, channel), kill=kill)

    async def interrupt(self, request: Request) -> Response:
        """`DELETE /code?id=`: interrupt the context's running cell (SIGINT to the kernel)."""
        self._context(request, query_one(request, "id")).interrupt()
        return Response(status_code=200)

    # -- kernels --

    async def _default(self, request: Request, language: str) -> AnyContext:
        """The language's default context, started on first use."""
        state = self._state(request)
        async with state.default_lock:
            found = state.contexts.get(state.default_contexts.get(language, ""))
            if found is not None and not found.alive:
                await self._drop(state, found)  # its kernel died: start afresh
                found = None
            if found is None:
                found = await self._start(request, language, DEFAULT_CWD)
                state.default_contexts[language] = found.id
        return found

    async def _start(self, request: Request, language: str, cwd: str) -> AnyContext:
        state = self._state(request)
        with state.context_budget.claim(len(state.contexts)):  # 429 beyond `max_code_contexts`
            if language == "bash":
                return await self._start_bash(request, cwd)
            return await self._start_kernel(request, language, cwd)

    async def _start_bash(self, request: Request, cwd: str) -> BashContext:
        handle = sandbox_of(request)
        context_id = new_id()
        state_path = await in_sandbox(handle.sessions.create(context_id, cwd), "session_init")
        context = BashContext(context_id, handle, state_path)
        self._state(request).contexts[context_id] = context
        return context

    async def _start_kernel(self, request: Request, language: str, cwd: str) -> CodeContext:
        state = self._state(request)
        context_id = new_id()
        log_path = state.log_path(f"kernel-{context_id}")
        kernel, client, files = await launch_kernel(request, language, context_id, cwd, log_path)
        context = CodeContext(context_id, language, kernel, client, files, log_path, cwd=cwd)
        state.contexts[context_id] = context
        return context

    @staticmethod
    async def _drop(state: SandboxState, context: AnyContext) -> None:
        state.contexts.pop(context.id, None)
        for language, default_id in list(state.default_contexts.items()):
            if default_id == context.id:
                del state.default_contexts[language]
        await context.close()


async def launch_kernel(
    request: Request, language: str, name: str, cwd: str, log_path: Path
) -> tuple[Execution, Any, KernelFiles]:
    """Start a kernel whose files are `KERNEL_DIR/<name>*`, and connect to it once it answers:
    (its process, the connected client, its files). Nothing is left behind if it fails."""
    spec = RunSpec(
        argv=["bash", "-c", _KERNEL_SCRIPT, "osbox-kernel", KERNEL_DIR, name],
        cwd=cwd,
        streamed=False,
        log_path=log_path,
    )
    kernel = Execution(name, f"{language} kernel", spec)
    await spawn_or_fail(kernel, request)
    files: KernelFiles | None = None
    client: Any = None
    try:
        files = await _kernel_files(sandbox_of(request), kernel, name, log_path)
        client = confined_client(files)
        client.start_channels()
        await client.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
    except BaseException as exc:
        if client is not None:
            client.stop_channels()
        await kernel.kill()
        if files is not None:
            files.remove()
        if isinstance(exc, ExecdError):
            raise
        if isinstance(exc, Exception):
            raise _start_failure(exc, log_path) from None
        raise
    return kernel, client, files


def _language(value: Any) -> str:
    language = optional_str(value, "language")
    if not language:
        raise bad_request("'language' is required, e.g. 'python'")
    if language not in LANGUAGES:
        raise ExecdError(
            501,
            NOT_SUPPORTED,
            f"osbox serve runs {', '.join(LANGUAGES)} code contexts, not {language!r}; "
            "for shell code use /command or /session",
        )
    return language


async def _kernel_files(
    handle: SandboxHandle, kernel: Execution, context_id: str, log_path: Path
) -> KernelFiles:
    """The kernel's directory, connection file and sockets, once it has made them all (each
    opened confined: see `kernel_files`); fails if the kernel dies or plants something else."""
    deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
    delay = 0.01
    files: KernelFiles | None = None
    try:
        while True:
            if not kernel.running:
                raise ExecdError(500, RUNTIME_ERROR, _kernel_died(log_path))
            if files is None:
                with contextlib.suppress(OSError, ValueError):  # not made yet
                    dir_fd = await handle.files.open(KERNEL_DIR, os.O_RDONLY | os.O_DIRECTORY)
                    files = KernelFiles(dir_fd, handle.host_uids)
            if files is not None and files.ready(context_id):
                return files
            if time.monotonic() > deadline:
                raise ExecdError(
                    500, RUNTIME_ERROR, f"the kernel did not start within {KERNEL_START_TIMEOUT_S:g} s"
                )
            await asyncio.sleep(delay)  # the kernel tells nobody when its files are there: poll, backing off
            delay = min(delay * 2, 0.2)
    except BaseException:
        if files is not None:
            files.close()
        raise


def _kernel_died(log_path: Path) -> str:
    log = tail(log_path)
    hint = ""
    if "No module named" in log and "ipykernel" in log:
        hint = (
            "; the image's python3 needs ipykernel: add it to the image "
            "(pip install ipykernel, or Debian's python3-ipykernel)"
        )
    elif "python3" in log and ("not found" in log or "No such file" in log):
        hint = "; the image has no python3: python contexts need an image with python3 and ipykernel"
    return f"the python kernel exited while starting{hint}: {log[-500:]}"


def _start_failure(exc: Exception, log_path: Path) -> ExecdError:
    return ExecdError(
        500,
        RUNTIME_ERROR,
        f"could not connect to the kernel: {exc}; kernel log: {tail(log_path, 300)}",
    )


# --- one cell ------------------------------------------------------------------------------------------


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    """A MIME bundle for both kinds of client: every MIME type as the spec documents it
    (`text/plain`, `text/html`, `image/png`, ...) and, as the reference renames it, `text/plain`
    also under `text`."""
    bundle = dict(data)
    if "text/plain" in bundle:
        bundle["text"] = bundle["text/plain"]
    return bundle


@dataclass
class _Cell:
    """What one cell has said so far."""

    msg_id: str
    idle: bool = False  # IOPub: the kernel went idle after it
    reply: dict[str, Any] | None = None  # shell: its execute_reply's content
    error_sent: bool = False
    timed_out: bool = False
    interrupted: bool = False  # by the server: its timeout, or its client left


async def _run_cell(
    context: CodeContext,
    run: PythonCell,
    code: str,
    channel: EventChannel,
    timeout_s: float | None,
    restart: Callable[[], Awaitable[None]],
) -> None:
    """Execute `code`, turning the kernel's messages for it into execd events.

    The cell is over once the kernel has sent both its `idle` status (IOPub: all output is out)
    and its `execute_reply` (shell), which is what says whether the cell ran: `ok`, `error`, or
    `aborted` (it never ran). Every cell is sent with `stop_on_error=False`, so ipykernel does not
    abort the requests that reach it just after a cell that raised; should a reply say `aborted`
    anyway, or `error` without an IOPub traceback, the client gets an `error` event: no cell is
    ever reported as a success that did not run. After `timeout_s` the kernel is interrupted
    (SIGINT) and the cell ends with a `Timeout` error instead of the `KeyboardInterrupt`; a kernel
    still busy `KERNEL_INTERRUPT_GRACE_S` later is restarted (`restart`), and the error says so.
    A client that leaves (`run.dropped`) has the cell interrupted the same way, restart included.

    `input()` in the cell: with a stdin pipe (`run.lines`) the kernel's `input_request` is answered
    with the pipe's next line (its prompt goes to stdout, as a terminal shows it; the pipe's end is
    an `EOFError`); without one, ipykernel raises `StdinNotImplementedError` at once.
    """
    started = time.monotonic()
    finished = False
    receiver = _Receiver(context, stdin=run.lines is not None)
    receiver.watch("dropped", run.dropped.wait())
    try:
        cell = _Cell(context.client.execute(code, allow_stdin=run.lines is not None, stop_on_error=False))
        deadline = None if timeout_s is None else started + timeout_s
        while not (cell.idle and cell.reply is not None):
            if deadline is not None and time.monotonic() >= deadline:
                if cell.interrupted:  # the interrupt did not end it: the kernel ignores SIGINT
                    await receiver.aclose()
                    await channel.publish(await _restarted(timeout_s if cell.timed_out else None, restart))
                    cell.error_sent = True
                    break
                cell.timed_out = True
                deadline = _interrupt(context, cell)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            source, message = await receiver.next(wait)
            if source == "exited":
                if not cell.error_sent:
                    await channel.publish(cell_error("KernelDied", "the kernel exited during the cell"))
                break
            if source == "dropped":
                if not cell.interrupted:
                    deadline = _interrupt(context, cell)
                continue
            if source == "line":
                context.client.input(_input_value(message))
                continue
            if message is None or message["parent_header"].get("msg_id") != cell.msg_id:
                continue  # a timer, or what is left of an earlier cell
            if source == "shell":
                cell.reply = message["content"]
            elif source == "stdin":
                if message["msg_type"] == "input_request" and run.lines is not None:
                    if prompt := message["content"].get("prompt"):
                        await channel.publish(frame("stdout", text=prompt))
                    receiver.watch("line", run.lines.readline())
            else:
                await _publish_iopub(cell, message, channel)
        if cell.timed_out and not cell.error_sent and timeout_s is not None:
            await channel.publish(timeout_error(timeout_s, "the kernel was interrupted"))
            cell.error_sent = True
        await _check_reply(cell, channel)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        await channel.publish(frame("execution_complete", execution_time=elapsed_ms))
        await channel.close()
        finished = True
    finally:
        run.finish()
        await receiver.aclose()
        if not finished:
            channel.abort()


def _interrupt(context: CodeContext, cell: _Cell) -> float:
    """Interrupt the cell's kernel; returns until when it has to act on it before it is restarted."""
    cell.interrupted = True
    context.interrupt()
    return time.monotonic() + KERNEL_INTERRUPT_GRACE_S


def _input_value(line: bytes | None) -> str:
    """A pipe's line as `input()` returns it (no newline); its end as ipykernel's EOF (`EOFError`)."""
    if line is None:
        return "\x04"
    return line.removesuffix(b"\n").decode(errors="replace")


async def _restarted(timeout_s: float | None, restart: Callable[[], Awaitable[None]]) -> bytes:
    """Restart the kernel of a cell that ignored its interrupt; the cell's error event, saying so."""
    grace = f"{KERNEL_INTERRUPT_GRACE_S:g} s"
    try:
        await restart()
    except Exception as exc:  # the context is dead now: the next cell says so
        failed = f"the kernel ignored the interrupt for {grace} and could not be restarted: {exc}"
        if timeout_s is None:
            return cell_error("Interrupted", failed)
        return timeout_error(timeout_s, failed)
    action = (
        f"the kernel ignored the interrupt for {grace}, so it was restarted: the context's state "
        "(variables, imports) is gone"
    )
    if timeout_s is None:  # its client left
        return frame(
            "error", error={"ename": "Interrupted", "evalue": action, "traceback": []}, restarted=True
        )
    return timeout_error(timeout_s, action, restarted=True)


async def _publish_iopub(cell: _Cell, message: dict[str, Any], channel: EventChannel) -> None:
    """One IOPub message of the cell as execd events."""
    kind, content = message["msg_type"], message["content"]
    if kind == "stream":
        name = "stderr" if content.get("name") == "stderr" else "stdout"
        await channel.publish(frame(name, text=content.get("text", "")))
    elif kind == "execute_result":
        count = content.get("execution_count")
        await channel.publish(frame("execution_count", execution_count=count))
        await channel.publish(
            frame("result", results=_bundle(content.get("data", {})), execution_count=count)
        )
    elif kind == "display_data":
        await channel.publish(frame("result", results=_bundle(content.get("data", {}))))
    elif kind == "error":
        if cell.timed_out:
            return  # the KeyboardInterrupt of our own interrupt: the Timeout error said it
        traceback = list(content.get("traceback", []))
        ename, evalue = content.get("ename", ""), content.get("evalue", "")
        if ename == "StdinNotImplementedError":  # input() in a cell sent without a stdin pipe
            evalue = f"{evalue} {_NO_STDIN_HINT}"
        await channel.publish(cell_error(ename, evalue, traceback))
        cell.error_sent = True
    elif kind == "status" and content.get("execution_state") == "idle":
        cell.idle = True


async def _check_reply(cell: _Cell, channel: EventChannel) -> None:
    """An error event for a cell whose reply says it failed or never ran, if none was sent yet."""
    if cell.error_sent or cell.reply is None:
        return
    status = cell.reply.get("status")
    if status == "aborted":
        await channel.publish(cell_error("CellAborted", "the kernel aborted the cell: it did not run"))
    elif status != "ok":
        ename = str(cell.reply.get("ename") or "KernelError")
        evalue = str(cell.reply.get("evalue") or f"the kernel's reply to the cell says {status!r}")
        await channel.publish(cell_error(ename, evalue, list(cell.reply.get("traceback") or [])))


class _Receiver:
    """The kernel's IOPub and shell (and with `stdin`, stdin) messages, in the order each channel
    sends them, and whatever else the cell `watch`es (a line of input, its client leaving).

    One receive per channel stays pending across calls, so a message that arrives on one channel
    while another call is answered from the other channel is never dropped by a cancellation.
    """

    def __init__(self, context: CodeContext, *, stdin: bool = False) -> None:
        self._context = context
        self._channels = ["iopub", "shell", *(["stdin"] if stdin else [])]
        self._pending: dict[str, asyncio.Future[Any]] = {}

    def watch(self, source: str, awaitable: Awaitable[Any]) -> None:
        """Have `next` answer `(source, result)` once `awaitable` is done (one at a time per source)."""
        if source in self._pending:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # the pending one answers for both
            return
        self._pending[source] = asyncio.ensure_future(awaitable)

    async def next(self, timeout_s: float | None) -> tuple[str, Any]:
        """(`"iopub"` | `"shell"` | `"stdin"`, message) or (a watched source, its result);
        (`"exited"`, None) once the kernel has exited; (`"timer"`, None) after `timeout_s` without any."""
        client = self._context.client
        receivers = {
            "iopub": client.get_iopub_msg,
            "shell": client.get_shell_msg,
            "stdin": client.get_stdin_msg,
        }
        for source in self._channels:
            if source not in self._pending:
                self._pending[source] = asyncio.ensure_future(receivers[source]())
        exited = asyncio.ensure_future(self._context.kernel.exited.wait())
        try:
            waits = {*self._pending.values(), exited}
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        for source, waiting in list(self._pending.items()):  # a message that arrived wins over the exit
            if waiting.done():
                del self._pending[source]
                return source, waiting.result()
        return ("exited", None) if exited.done() and not exited.cancelled() else ("timer", None)

    async def aclose(self) -> None:
        """Stop receiving (nothing more is expected for the cell)."""
        for waiting in self._pending.values():
            waiting.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._pending.clear()
