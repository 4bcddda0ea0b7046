"""`bash` code contexts: osbox's own bash sessions behind the code-context API.

No bash Jupyter kernel ships with Debian, so a `bash` context is a bash session (see `sessions`):
each cell is a fresh `bash` that restores the context's exported variables and cwd, runs the
code, and saves them again, so `export X=1` and `cd /tmp` carry over from cell to cell (functions,
aliases and unexported variables do not). On the wire a cell looks like a kernel's: `init{text=
context id}`, `stdout` chunks that carry their own newlines (stderr is merged into stdout), then
for a non-zero exit `error{ename: "CommandExecError", evalue: "<exit status>"}`, and always
`execution_complete` last. A cell past its timeout is killed (its state changes are lost) and ends
with a `Timeout` error; `DELETE /code?id=` sends it SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .commands import DEFAULT_CWD, spawn_or_fail
from .runner import Execution, RunSpec
from .sessions import SESSION_SCRIPT
from .streaming import EventChannel, frame, parse_frames

if TYPE_CHECKING:
    from starlette.requests import Request

    from osbox.server._backend.base import SandboxHandle

__all__ = ["BashContext", "ContextBase", "cell_error", "timeout_error"]


def cell_error(ename: str, evalue: str, traceback: list[str] | None = None) -> bytes:
    """A cell's `error` event."""
    return frame("error", error={"ename": ename, "evalue": evalue, "traceback": traceback or []})


def timeout_error(timeout_s: float, action: str) -> bytes:
    """The `error` event of a cell that ran past its timeout; `action` says what was done to it."""
    return cell_error(
        "Timeout", f"the cell ran longer than its timeout of {timeout_s * 1000:.0f} ms; {action}"
    )


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
        spec = RunSpec(
            argv=["bash", "-c", SESSION_SCRIPT, "osbox-session", code, self.state_path, ""],
            cwd=DEFAULT_CWD,
            merge_stderr=True,
        )
        run = Execution(f"{self.id}-{secrets.token_hex(4)}", code, spec)
        await spawn_or_fail(run, request)
        self.run = run
        channel = EventChannel()
        self.cell = asyncio.create_task(_relay(run, channel, timeout_s), name=f"osbox-bash-cell-{self.id}")
        return channel

    async def close(self) -> None:
        """Kill the running cell and remove the session's state files."""
        if self.run is not None:
            await self.run.kill()
        if self.cell is not None:
            self.cell.cancel()
        with contextlib.suppress(Exception):
            await self.handle.sessions.drop(self.state_path)


async def _relay(run: Execution, channel: EventChannel, timeout_s: float | None) -> None:
    """The run's line events as a kernel's cell events (see the module docstring)."""
    assert run.channel is not None
    started = time.monotonic()
    finished = False
    timer = None
    timed_out = asyncio.Event()
    if timeout_s is not None:

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
                    text = event.get("text", "")
                    await channel.publish(frame("stdout", text=text if text == "\n" else text + "\n"))
                elif kind == "error":
                    failed = frame("error", error=event.get("error") or {})
        if timeout_s is not None and timed_out.is_set():
            failed = timeout_error(timeout_s, "it was killed")
        if failed is not None:
            await channel.publish(failed)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        await channel.publish(frame("execution_complete", execution_time=elapsed_ms))
        await channel.close()
        finished = True
    finally:
        if timer is not None:
            timer.cancel()
        if not finished:
            channel.abort()
