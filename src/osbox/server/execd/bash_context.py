"""`bash` code contexts: osbox's own bash sessions behind the code-context API.

No bash Jupyter kernel ships with Debian, so a `bash` context is a bash session (see `sessions`):
each cell is a fresh `bash` that restores the context's exported variables and cwd, runs the
code, and saves them again, so `export X=1` and `cd /tmp` carry over from cell to cell (functions,
aliases and unexported variables do not). On the wire a cell looks like a kernel's: `init{text=
context id}`, `stdout` chunks exactly as written (stderr is merged into stdout; bytes that are
not UTF-8 as `\\udcXX` escapes, as in osbox's exact framing of commands), then for a non-zero
exit `error{ename: "CommandExecError", evalue: "<exit status>"}`, and always
`execution_complete` last. A cell past its timeout (`timeout` in the request, else
`DEFAULT_RUN_TIMEOUT_S`, a session run's: 24 h) is killed (its state changes are lost) and ends with
a `Timeout` error; `DELETE /code?id=` sends it SIGINT. As for session runs, `OSBOX-STDIN: pipe` gives
a cell a stdin pipe (fed by `POST /command/{cell id}/stdin`), and a client that drops a running
cell's stream leaves no process behind (`disconnect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from osbox._wire import OUTPUT_FRAMING_EXACT

from .commands import DEFAULT_CWD, spawn_or_fail
from .disconnect import on_disconnect
from .runner import Execution, RunSpec
from .sessions import DEFAULT_RUN_TIMEOUT_S, SESSION_SCRIPT
from .stdin import announce_pipe, pipe_for
from .streaming import EventChannel, frame, parse_frames

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from osbox.server._backend.base import SandboxHandle

__all__ = ["BashContext", "ContextBase", "cell_error", "timeout_error", "timeout_text"]


def cell_error(ename: str, evalue: str, traceback: list[str] | None = None) -> bytes:
    """A cell's `error` event."""
    return frame("error", error={"ename": ename, "evalue": evalue, "traceback": traceback or []})


def timeout_text(timeout_s: float, action: str) -> str:
    """What a cell's `Timeout` error says; `action` says what was done to it."""
    return f"the cell ran longer than its timeout of {timeout_s * 1000:.0f} ms; {action}"


def timeout_error(timeout_s: float, action: str, **extra: object) -> bytes:
    """The `error` event of a cell that ran past its timeout; `action` says what was done to it.
    `timed_out: true` beside `error` says so to osbox's clients, as for a command its timeout killed."""
    error = {"ename": "Timeout", "evalue": timeout_text(timeout_s, action), "traceback": []}
    return frame("error", error=error, timed_out=True, **extra)


class ContextBase:
    """What every kind of code context shares: one cell at a time, under `lock`."""

    id: str
    language: str
    cell: asyncio.Task[None] | None
    lock: asyncio.Lock

    @property
    def busy(self) -> bool:
        """A cell is running."""
        return self.cell is not None and not self.cell.done()

    def to_wire(self) -> dict[str, str]:
        """The context as the API shows it."""
        return {"id": self.id, "language": self.language}

    def answer(self, response: Response, *, kill: bool) -> Response:
        """The running cell's stream as sent: a kernel's cell outlives its client (it is left as is)."""
        return response


@dataclass
class BashContext(ContextBase):
    """A bash code context: its session state inside the sandbox and the cell running in it."""

    id: str
    handle: SandboxHandle
    state_path: str
    language: str = "bash"
    run: Execution | None = None
    cell: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def alive(self) -> bool:
        """Always: there is no kernel to die, every cell is a fresh bash."""
        return True

    def interrupt(self) -> None:
        """SIGINT to the running cell's process group."""
        if self.run is not None and self.run.process is not None and self.run.running:
            self.run.process.signal_group(signal.SIGINT)

    async def start_cell(self, request: Request, code: str, timeout_s: float | None) -> EventChannel:
        """Start `code` as this context's next cell; its events come on the returned channel."""
        timeout_s = timeout_s or DEFAULT_RUN_TIMEOUT_S
        spec = RunSpec(
            argv=["bash", "-c", SESSION_SCRIPT, "osbox-session", code, self.state_path, ""],
            cwd=DEFAULT_CWD,
            merge_stderr=True,
            framing=OUTPUT_FRAMING_EXACT,  # chunks as written, as a kernel's stream messages are
            stdin=pipe_for(request.headers),
        )
        run = Execution(f"{self.id}-{secrets.token_hex(4)}", code, spec)
        await spawn_or_fail(run, request)  # closes the stdin pipe if it fails
        self.run = run
        channel = EventChannel()
        self.cell = asyncio.create_task(_relay(run, channel, timeout_s), name=f"osbox-bash-cell-{self.id}")
        return channel

    def answer(self, response: Response, *, kill: bool) -> Response:
        """The running cell's stream as sent: its stdin pipe announced, killed if the client leaves."""
        assert self.run is not None
        if self.run.stdin is not None:
            announce_pipe(response, self.run.id)
        return on_disconnect(response, self.run, kill=kill)

    async def close(self) -> None:
        """Kill the running cell and remove the session's state files."""
        if self.run is not None:
            await self.run.kill()
        if self.cell is not None:
            self.cell.cancel()
        with contextlib.suppress(Exception):
            await self.handle.sessions.drop(self.state_path)


async def _relay(run: Execution, channel: EventChannel, timeout_s: float) -> None:
    """The run's line events as a kernel's cell events (see the module docstring)."""
    assert run.channel is not None
    started = time.monotonic()
    finished = False
    timed_out = asyncio.Event()

    async def expire() -> None:
        await asyncio.sleep(timeout_s)
        timed_out.set()
        await run.kill()

    timer = asyncio.create_task(expire())
    failed: bytes | None = None
    try:
        async for raw in run.channel.events():
            for event in parse_frames(raw):
                kind = event.get("type")
                if kind in ("stdout", "stderr"):
                    await channel.publish(frame("stdout", text=event.get("text", "")))
                elif kind == "error":
                    failed = frame("error", error=event.get("error") or {})
        if timed_out.is_set():
            failed = timeout_error(timeout_s, "it was killed")
        if failed is not None:
            await channel.publish(failed)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        await channel.publish(frame("execution_complete", execution_time=elapsed_ms))
        await channel.close()
        finished = True
    finally:
        timer.cancel()
        if not finished:
            channel.abort()
