"""One process run inside a sandbox for `/command` or a session run, from spawn to exit.

An `Execution` spawns `argv` through the backend, pumps its output and records how it ended.
It runs in its own task, so the HTTP client leaving never stops it:

- streamed (foreground commands, session runs): stdout/stderr come through pipes, are split
  into lines and published as events on an `EventChannel`; the raw bytes are also appended to
  the log file when there is one, so a client that lost the stream can read the rest.
- logged (background commands): stdout and stderr, merged, come through one pipe into the log
  file only, and keep coming after the command exits for as long as a process it left behind
  (a daemon) holds the pipe open, as they would with the file itself as its output.

The log is a `CommandLog`: capped at `RunSpec.log_max_bytes`, keeping the newest output. That is
why output always passes through the server: a file handed to the child could grow without bound.

Server descriptors per run (what the per-sandbox budgets in `state.py` multiply): the agent
connection and the pidfd (2), the read ends of the output pipes (1 logged, 1-2 streamed) and the
log's open segment (1): 4-5 while it runs or its output is open.

Ends (reference behaviour, wire-behaviour §1.4): exit 0 → `execution_complete`; exit N →
`error{ename: CommandExecError, evalue: "N"}`; killed by a signal (timeout, interrupt) →
`evalue: "-1"`, traceback `signal: killed`, and exit code -1 in the status (as Go reports it).
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

from osbox.server._backend.base import SandboxHandle, SandboxProcess

from .errors import log
from .logfile import DEFAULT_LOG_MAX_BYTES, CommandLog
from .streaming import EventChannel, LineSplitter, frame

if TYPE_CHECKING:
    from .stdin import StdinPipe

__all__ = ["Execution", "RunSpec", "rfc3339"]

READ_CHUNK = 64 * 1024
#: After the process exits, how long to keep reading output that orphans may still hold open.
DRAIN_SECONDS = 1.0
INTERRUPT_GRACE_SECONDS = 3.0


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
                self.log = CommandLog(spec.log_path, spec.log_max_bytes)
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
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_CHUNK * 4)
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        splitter = LineSplitter()
        try:
            while chunk := await reader.read(READ_CHUNK):
                if self.log is not None:
                    self._write_log(chunk)
                if self.channel is not None:
                    await self._publish_lines(kind, splitter.feed(chunk))
        except asyncio.CancelledError:
            pass  # stopped after exit: an orphan still holds the pipe; what it sent so far counts
        finally:
            transport.close()
        await self._publish_lines(kind, splitter.flush())

    def _write_log(self, chunk: bytes) -> None:
        assert self.log is not None
        try:
            self.log.write(chunk)
        except OSError as exc:  # the host's disk is full: stop logging, not the command
            log.warning("command %s: its log stops here: %s", self.id, exc)
            self.log.close()

    async def _publish_lines(self, kind: str, lines: list[str]) -> None:
        if self.channel is None:
            return
        for line in lines:
            await self.channel.publish(frame(kind, text=line))

    def _record_exit(self, code: int) -> None:
        self.finished_at = dt.datetime.now(dt.UTC)
        if code < 0 or self._timed_out:
            name = "killed" if self._timed_out or code == -signal.SIGKILL else _signal_name(-code)
            self.exit_code = -1
            self.error = f"signal: {name}"
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
        return frame(
            "error",
            error={"ename": "CommandExecError", "evalue": str(self.exit_code), "traceback": [traceback]},
        )

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()

    async def interrupt(self, grace_s: float = INTERRUPT_GRACE_SECONDS) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; returns once it has exited."""
        if self.process is None or not self.running:
            return
        self.process.signal_group(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), grace_s)
        if self.running:
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
        return body


def _signal_name(number: int) -> str:
    try:
        return {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}.get(
            signal.Signals(number), signal.Signals(number).name.lower()
        )
    except ValueError:
        return f"signal {number}"
