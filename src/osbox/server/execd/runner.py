"""One process run inside a sandbox for `/command` or a session run, from spawn to exit.

An `Execution` spawns `argv` through the backend, pumps its output and records how it ended.
It runs in its own task, so the HTTP client leaving never stops it:

- streamed (foreground commands, session runs): stdout/stderr come through pipes, are framed
  (`output.py`: one event per line, or the exact framing's chunks) and published on an
  `EventChannel`; the raw bytes are also appended to the log file when there is one, so a client
  that lost the stream can read the rest.
- logged (background commands): stdout and stderr, merged, come through one pipe into the log
  file only, and keep coming after the command exits for as long as a process it left behind
  (a daemon) holds the pipe open, as they would with the file itself as its output.

The log is a `CommandLog`: capped at `RunSpec.log_max_bytes`, keeping the newest output. That is
why output always passes through the server: a file handed to the child could grow without bound.

Server descriptors per run (what the per-sandbox budgets in `state.py` multiply): the agent
connection and the pidfd (2), the read ends of the output pipes (1 logged, 1-2 streamed) and the
log's open segment (1): 4-5 while it runs or its output is open.

Ends: exit 0 → `execution_complete`; exit N → `error{ename: CommandExecError, evalue: "N"}`
(wire-behaviour §1.4). Killed by signal N, the exit status is 128 + N, the way a shell reports it
(the reference says -1, which tells neither which signal nor that there was one): `evalue: "137"`
with the traceback the reference gives (`signal: killed`, Go's name), and osbox's own fields beside
`error`: `signal` (`"SIGKILL"`) and, when the timeout killed it, `timed_out: true`. The status
(`GET /command/status/{id}`) carries the same `exit_code`, `signal` and `timed_out`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbox._wire import GO_SIGNAL_WORDS
from osbox.server._backend.base import SandboxHandle, SandboxProcess

from .errors import log
from .logfile import DEFAULT_LOG_MAX_BYTES, CommandLog
from .output import framer_for, pump
from .streaming import EventChannel, frame

if TYPE_CHECKING:
    from .stdin import StdinPipe

__all__ = ["Execution", "RunSpec", "rfc3339"]

#: After the process exits, how long to keep reading output that orphans may still hold open.
DRAIN_SECONDS = 1.0
INTERRUPT_GRACE_SECONDS = 3.0
#: When `interrupt` sends its SIGTERM a second time, if the run still lives (see there).
INTERRUPT_REPEAT_SECONDS = 0.2


def rfc3339(moment: dt.datetime) -> str:
    """RFC3339 in UTC with a `Z`, millisecond precision."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class RunSpec:
    """What to run and how."""

    argv: Sequence[str]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    timeout_s: float | None = None
    #: Stream output as events (foreground) or only write it to `log_path` (background).
    streamed: bool = True
    merge_stderr: bool = False
    log_path: Path | None = None
    #: The log keeps the newest this many bytes (see `CommandLog`).
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    #: How streamed output is framed: "lines" (the reference's) or "exact" (see `output.py`).
    framing: str = "lines"
    #: The command's stdin (`stdin.py`), or None for /dev/null. Closed when the command exits.
    stdin: StdinPipe | None = None


class Execution:
    """A running (then finished) process and its outcome."""

    def __init__(self, exec_id: str, content: str, spec: RunSpec) -> None:
        self.id = exec_id
        self.content = content
        self.spec = spec
        self.channel: EventChannel | None = EventChannel() if spec.streamed else None
        self.started_at = dt.datetime.now(dt.UTC)
        self.finished_at: dt.datetime | None = None
        self.exit_code: int | None = None
        self.error: str | None = None
        #: The name of the signal that killed the process ("SIGKILL"), if one did.
        self.signal: str | None = None
        self.exited = asyncio.Event()
        self.process: SandboxProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._timed_out = False
        #: The output log (None for runs without one: session runs).
        self.log: CommandLog | None = None

    @property
    def stdin(self) -> StdinPipe | None:
        """The pipe to the command's stdin, when it was started with one."""
        return self.spec.stdin

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return not self.exited.is_set()

    @property
    def holds_output(self) -> bool:
        """True while the run holds server descriptors: it runs, or something it started still
        writes to its output."""
        return self.running or (self._task is not None and not self._task.done())

    async def start(self, handle: SandboxHandle) -> None:
        """Spawn the process and start following it. Spawn failures propagate (nothing leaks)."""
        spec = self.spec
        child_fds: list[int] = []
        parent_fds: list[int] = []
        out_r: int | None = None
        err_r: int | None = None
        try:
            if spec.log_path is not None:
                self.log = CommandLog(spec.log_path, spec.log_max_bytes, ring=spec.streamed)
            elif not spec.streamed:
                raise ValueError("a background run needs a log file")
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(out_r)
            child_fds.append(out_w)
            err_w = out_w
            if spec.streamed and not spec.merge_stderr:
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                parent_fds.append(err_r)
                child_fds.append(err_w)
            self.process = await handle.spawn(
                spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                stdout=out_w,
                stderr=err_w,
                stdin=spec.stdin.child_fd if spec.stdin is not None else None,
                uid=spec.uid,
                gid=spec.gid,
            )
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            self._close_log()
            if spec.stdin is not None:
                spec.stdin.close()
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
            if spec.stdin is not None:
                spec.stdin.release_child_end()
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._follow(out_r, err_r), name=f"osbox-exec-{self.id}")

    async def _follow(self, out_r: int | None, err_r: int | None) -> None:
        assert self.process is not None
        pumps = [
            asyncio.create_task(self._pump(fd, kind))
            for fd, kind in ((out_r, "stdout"), (err_r, "stderr"))
            if fd is not None
        ]
        waiter = asyncio.ensure_future(self.process.wait())
        ended = False
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self.spec.timeout_s)
            if not done:
                self._timed_out = True
                self.process.signal_group(signal.SIGKILL)
            code = await waiter
            if self.spec.stdin is not None:
                self.spec.stdin.close()  # its writers get 409 STDIN_CLOSED from now on
            if pumps and self.channel is None:
                # Reported finished only once its output is in the log: at the end of that output,
                # or, when something it left behind holds it open, after DRAIN_SECONDS (by then
                # the pipe's contents at exit have long been read).
                await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
            self._record_exit(code)
            if pumps and self.channel is None:
                await asyncio.wait(pumps)  # logged: until whatever it left behind closes its output
            elif pumps:
                _, late = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
                for pump in late:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            if self.channel is not None:
                await self.channel.publish(self._final_event())
                await self.channel.close()
            ended = True
        finally:
            if self.channel is not None and not ended:
                self.channel.abort()  # killed or failed: end the client's stream instead of pinging forever
            for pump in pumps:
                pump.cancel()
            if not waiter.done():
                waiter.cancel()
            if not self.exited.is_set():
                self._record_exit(-int(signal.SIGKILL))
            self._close_log()
            if self.spec.stdin is not None:
                self.spec.stdin.close()

    async def _pump(self, fd: int, kind: str) -> None:
        channel = self.channel
        framer = framer_for(self.spec.framing, kind) if channel is not None else None

        async def take(chunk: memoryview) -> None:
            if self.log is not None:
                self._write_log(chunk)
            if channel is not None and framer is not None:
                await channel.publish(framer.feed(chunk))

        # Cancelled after exit when an orphan still holds the pipe: what it sent so far counts.
        with contextlib.suppress(asyncio.CancelledError):
            await pump(fd, take)
        if channel is not None and framer is not None:
            await channel.publish(framer.flush())

    def _write_log(self, chunk: bytes | memoryview) -> None:
        assert self.log is not None
        try:
            self.log.write(chunk)
        except OSError as exc:  # the host's disk is full: stop logging, not the command
            log.warning("command %s: its log stops here: %s", self.id, exc)
            self.log.close()

    def _record_exit(self, code: int) -> None:
        self.finished_at = dt.datetime.now(dt.UTC)
        if code < 0:
            self.exit_code = 128 - code
            self.signal = _signal_constant(-code)
            self.error = f"signal: {_signal_name(-code)}"
            if self._timed_out:
                self.error += f" (timeout after {int((self.spec.timeout_s or 0) * 1000)} ms)"
        else:
            self.exit_code = code
            self.error = f"exit status {code}" if code else None
        self.exited.set()

    def _final_event(self) -> bytes:
        elapsed_ms = int((time.monotonic() - self._started) * 1000)
        if self.exit_code == 0:
            return frame("execution_complete", execution_time=elapsed_ms)
        traceback = (self.error or "").split(" (timeout", 1)[0]
        error = {"ename": "CommandExecError", "evalue": str(self.exit_code), "traceback": [traceback]}
        return frame("error", error=error, **self._signal_fields())

    def _signal_fields(self) -> dict[str, Any]:
        """osbox's fields for a run a signal ended: which signal, and whether the timeout sent it."""
        fields: dict[str, Any] = {}
        if self.signal is not None:
            fields["signal"] = self.signal
            if self._timed_out:
                fields["timed_out"] = True
        return fields

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()

    async def interrupt(self, grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; returns once it has exited.

        The SIGTERM goes a second time after `INTERRUPT_REPEAT_SECONDS`: a bash with an EXIT trap
        (a session run's) catches SIGTERM, and a child it is forking at that moment catches it with
        bash's handler, then execs and forgets it, while bash waits for that child. The second one
        reaches the child as it now is.
        """
        if self.process is None or not self.running:
            return
        repeat_s = min(INTERRUPT_REPEAT_SECONDS, grace_s)
        for wait_s in (repeat_s, grace_s - repeat_s):
            self.process.signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), wait_s)
            if not self.running:
                return
        self.process.signal_group(signal.SIGKILL)
        await self.exited.wait()

    async def kill(self) -> None:
        """SIGKILL the process group and wait until the follower task has finished."""
        if self.process is not None and self.running:
            self.process.signal_group(signal.SIGKILL)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), DRAIN_SECONDS * 5)
            if not self._task.done():
                self._task.cancel()

    def status(self) -> dict[str, Any]:
        """The `CommandStatusResponse` body."""
        body: dict[str, Any] = {
            "id": self.id,
            "content": self.content,
            "running": self.running,
            "started_at": rfc3339(self.started_at),
        }
        if not self.running:
            body["exit_code"] = self.exit_code
            body["finished_at"] = rfc3339(self.finished_at or self.started_at)
            if self.error:
                body["error"] = self.error
            body.update(self._signal_fields())
        return body


def _signal_constant(number: int) -> str:
    """The signal's constant name (`SIGKILL`), or `SIG<number>` for one Python does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _signal_name(number: int) -> str:
    """The signal as Go's `ProcessState.String` words it (`killed`), what the reference reports."""
    constant = _signal_constant(number)
    return GO_SIGNAL_WORDS.get(constant, constant.lower())
