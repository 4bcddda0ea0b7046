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
`error{ename, evalue, traceback}` for an exception, then always `execution_complete`. Unlike the
reference, `display_data` (plots, HTML) is kept too: as a `result` with every MIME type. One cell
at a time per context: a concurrent one gets `init` and then a bare "busy" error. `DELETE /code?id=`
interrupts the running cell (SIGINT: it ends with a `KeyboardInterrupt` error). A cell runs in its
own task, so a client that leaves does not stop it.

Only `python` contexts exist here; with neither a context id nor a language, `/code` runs the code
as a shell command, as the reference does. The sandbox's `python3` must have `ipykernel` (Debian's
`python3-ipykernel`); when it has not, creating a context says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from osbox.server._logtail import tail

from .commands import DEFAULT_CWD, new_id, resolve_cwd, spawn_or_fail
from .errors import (
    MISSING_QUERY,
    NOT_SUPPORTED,
    RUNTIME_ERROR,
    ExecdError,
    bad_request,
    error_event,
)
from .inputs import json_body, json_object, optional_str, query_one, sandbox_of
from .kernel_files import KernelFiles, confined_client
from .runner import Execution, RunSpec
from .state import SandboxApi
from .streaming import EventChannel, event_response, frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from osbox.server._backend.base import SandboxHandle

    from .state import SandboxState, StateStore

__all__ = ["CodeApi", "CodeContext"]

KERNEL_DIR = "/tmp/.osbox/kernels"  # noqa: S108 (inside the sandbox: its own private /tmp)
LANGUAGES = ("python",)
#: How long a new kernel may take to write its connection file and answer.
KERNEL_START_TIMEOUT_S = 60.0
#: How long the kernel's execute reply may lag behind its `idle` status (it is normally sent first).
_REPLY_TIMEOUT_S = 5.0
_KERNEL_SCRIPT = (
    'mkdir -p "$1" && exec env -u JPY_PARENT_PID python3 -m ipykernel_launcher '
    '-f "$1/$2.json" --IPKernelApp.transport=ipc --ip="$1/$2"'
)


@dataclass
class CodeContext:
    """A live kernel: its process, the client connected to it, and the cell running in it."""

    id: str
    language: str
    kernel: Execution
    client: Any  # jupyter_client.asynchronous.AsyncKernelClient
    files: KernelFiles  # the kernel directory and sockets, opened by the server itself
    cell: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def busy(self) -> bool:
        return self.cell is not None and not self.cell.done()

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language}

    async def close(self) -> None:
        """Stop the cell, the client and the kernel; release the directory."""
        if self.cell is not None:
            self.cell.cancel()
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        await self.kernel.kill()
        self.files.close()


class CodeApi(SandboxApi):
    """The code endpoints, over the service's per-sandbox state.

    `run_shell(request, code)` answers `/code` calls with neither a context id nor a language.
    """

    def __init__(self, store: StateStore, run_shell: Callable[[Request, str], Awaitable[Response]]) -> None:
        super().__init__(store)
        self._run_shell = run_shell

    def _context(self, request: Request, context_id: str) -> CodeContext:
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
        context_id = optional_str(target.get("id"), "context.id")
        language = optional_str(target.get("language"), "context.language")
        if context_id:
            context = self._context(request, context_id)
        elif language:
            context = await self._default(request, _language(language))
        else:
            return await self._run_shell(request, code)  # the reference runs it as a shell command

        init = frame("init", text=context.id)
        async with context.lock:
            if context.busy:
                busy = ExecdError(500, RUNTIME_ERROR, f"code context {context.id} is busy running a cell")
                return event_response(init, None, error_event(busy))
            channel = EventChannel()
            context.cell = asyncio.create_task(
                _run_cell(context, code, channel), name=f"osbox-cell-{context.id}"
            )
        return event_response(init, channel)

    async def interrupt(self, request: Request) -> Response:
        """`DELETE /code?id=`: interrupt the context's running cell (SIGINT to the kernel)."""
        context = self._context(request, query_one(request, "id"))
        process = context.kernel.process
        if process is not None and context.kernel.running:
            process.signal_group(signal.SIGINT)
        return Response(status_code=200)

    # -- kernels --

    async def _default(self, request: Request, language: str) -> CodeContext:
        """The language's default context, started on first use."""
        state = self._state(request)
        async with state.default_lock:
            found = state.contexts.get(state.default_contexts.get(language, ""))
            if found is not None and not found.kernel.running:
                await self._drop(state, found)  # its kernel died: start afresh
                found = None
            if found is None:
                found = await self._start(request, language, DEFAULT_CWD)
                state.default_contexts[language] = found.id
        return found

    async def _start(self, request: Request, language: str, cwd: str) -> CodeContext:
        state = self._state(request)
        with state.context_budget.claim(len(state.contexts)):  # 429 beyond `max_code_contexts`
            return await self._start_kernel(request, language, cwd)

    async def _start_kernel(self, request: Request, language: str, cwd: str) -> CodeContext:
        handle = sandbox_of(request)
        state = self._state(request)
        context_id = new_id()
        log_path = state.log_path(f"kernel-{context_id}")
        spec = RunSpec(
            argv=["bash", "-c", _KERNEL_SCRIPT, "osbox-kernel", KERNEL_DIR, context_id],
            cwd=cwd,
            streamed=False,
            log_path=log_path,
        )
        kernel = Execution(context_id, f"{language} kernel", spec)
        await spawn_or_fail(kernel, request)
        files: KernelFiles | None = None
        client: Any = None
        try:
            files = await _kernel_files(handle, kernel, context_id, log_path)
            client = confined_client(files)
            client.start_channels()
            await client.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
        except BaseException as exc:
            if client is not None:
                client.stop_channels()
            await kernel.kill()
            if files is not None:
                files.close()
            if isinstance(exc, ExecdError):
                raise
            if isinstance(exc, Exception):
                raise _start_failure(exc, log_path) from None
            raise
        context = CodeContext(context_id, language, kernel, client, files)
        state.contexts[context_id] = context
        return context

    @staticmethod
    async def _drop(state: SandboxState, context: CodeContext) -> None:
        state.contexts.pop(context.id, None)
        for language, default_id in list(state.default_contexts.items()):
            if default_id == context.id:
                del state.default_contexts[language]
        await context.close()


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
        hint = "; the sandbox's python3 needs ipykernel (Debian: apt-get install python3-ipykernel)"
    return f"the python kernel exited while starting{hint}: {log[-500:]}"


def _start_failure(exc: Exception, log_path: Path) -> ExecdError:
    return ExecdError(
        500,
        RUNTIME_ERROR,
        f"could not connect to the kernel: {exc}; kernel log: {tail(log_path, 300)}",
    )


# --- one cell ------------------------------------------------------------------------------------------


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    """A MIME bundle as execd sends it: `text/plain` renamed to `text`, every other type kept."""
    return {("text" if mime == "text/plain" else mime): value for mime, value in data.items()}


async def _run_cell(context: CodeContext, code: str, channel: EventChannel) -> None:
    """Execute `code`, turning the kernel's messages for it into execd events, until the kernel is idle."""
    started = time.monotonic()
    client = context.client
    finished = False
    try:
        # stop_on_error=False: after a cell that raised, ipykernel otherwise aborts every request that
        # reaches it for a moment, without a word on IOPub, and the next cell would look like a success.
        msg_id = client.execute(code, allow_stdin=False, stop_on_error=False)
        while True:
            message = await _next_message(context)
            if message is None:
                error = {
                    "ename": "KernelDied",
                    "evalue": "the kernel exited during the cell",
                    "traceback": [],
                }
                await channel.publish(frame("error", error=error))
                break
            if message["parent_header"].get("msg_id") != msg_id:
                continue
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
                error = {
                    "ename": content.get("ename", ""),
                    "evalue": content.get("evalue", ""),
                    "traceback": list(content.get("traceback", [])),
                }
                await channel.publish(frame("error", error=error))
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if message is not None and await _reply_status(context, msg_id) == "aborted":
            error = {
                "ename": "CellAborted",
                "evalue": "the kernel aborted the cell: it did not run",
                "traceback": [],
            }
            await channel.publish(frame("error", error=error))
        elapsed_ms = int((time.monotonic() - started) * 1000)
        await channel.publish(frame("execution_complete", execution_time=elapsed_ms))
        await channel.close()
        finished = True
    finally:
        if not finished:
            channel.abort()


async def _reply_status(context: CodeContext, msg_id: str) -> str | None:
    """The status of the kernel's execute reply to `msg_id` (`ok`, `error`, `aborted`), or None if
    none comes in time. Replies to earlier cells still queued on the shell channel are skipped."""
    deadline = time.monotonic() + _REPLY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply: dict[str, Any] = await context.client.get_shell_msg(timeout=left)
        except (TimeoutError, queue.Empty):
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            status = reply["content"].get("status")
            return status if isinstance(status, str) else None
    return None


async def _next_message(context: CodeContext) -> dict[str, Any] | None:
    """The kernel's next iopub message, or None once the kernel has exited."""
    receive = asyncio.ensure_future(context.client.get_iopub_msg())
    exited = asyncio.ensure_future(context.kernel.exited.wait())
    try:
        await asyncio.wait({receive, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if receive.done():
        message: dict[str, Any] = receive.result()
        return message
    receive.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receive
    return None
