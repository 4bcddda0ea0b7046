"""`AsyncCommandHandle`: a command running in the background, from `sandbox.spawn(...)`.

    server = await sandbox.spawn("python3 -m http.server 8000")
    ...
    print(await server.logs())              # its output so far (stdout and stderr, merged)
    await server.kill()                     # SIGTERM, then SIGKILL after a grace period
    execution = await server.wait()         # returns once it has exited: exit code and output

It polls execd's status and log routes (`GET /command/status/{id}`, `GET /command/{id}/logs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import _base_client
from .._exceptions import SandboxError
from .._sandbox import _Backoff, _checked, _finished_execution
from .._stdin import AsyncStdinSource
from ..models.events import Execution
from ..models.execd import CommandStatusResponse
from .execd import AsyncExecdClient

__all__ = ["AsyncCommandHandle"]


class AsyncCommandHandle:
    """A background command: `id`, `command`, and `logs()`, `status()`, `wait()`, `kill()`."""

    def __init__(self, execd: Callable[[], AsyncExecdClient], command_id: str, command: str) -> None:
        self._execd = execd
        self.id = command_id
        self.command = command
        self._output: list[str] = []
        self._cursor: str | None = None

    async def logs(self) -> str:
        """Everything the command has written so far, stdout and stderr merged (execd keeps one log).

        Each call fetches only what is new since the last one (a big log comes in several answers).
        """
        while True:
            chunk = await self._execd().get_command_logs(self.id, cursor=self._cursor)
            # Text under a cursor that stood still is what was read already (a server without the
            # cursor header repeats the whole log): keeping it would double it, reading on loop forever.
            moved = chunk.cursor != self._cursor or (self._cursor is None and not self._output)
            self._cursor = chunk.cursor
            if chunk.text and moved:
                self._output.append(chunk.text)
            if not chunk.text or not moved:
                return "".join(self._output)

    async def status(self) -> CommandStatusResponse:
        """Whether it runs, and once it has exited its exit code (`GET /command/status/{id}`)."""
        return await self._execd().get_command_status(self.id)

    async def wait(self, timeout: float | None = None, *, check: bool = False) -> Execution:
        """Wait until the command has exited and return its `Execution` (merged output in `stdout`).

        `timeout` (seconds; None waits as long as it runs) raises `SandboxError` when it runs longer,
        leaving it running; `check=True` raises `CommandFailedError` when it exited non-zero.

            result = handle.wait(timeout=60, check=True)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _Backoff()
        while True:
            status = await self.status()
            await self.logs()  # read the log as it grows
            if not status.running:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise SandboxError(
                    f"command {self.id} ({self.command!r}) is still running after {timeout:g} s; "
                    "kill() it, or wait() longer"
                )
            await _base_client._asleep(pause.next())
        execution = _finished_execution(self.id, await self.logs(), status)
        return _checked(self.command, execution) if check else execution

    async def send_stdin(self, data: AsyncStdinSource) -> None:
        """Write to the command's stdin (it was spawned with `stdin=True`); returns once the pipe took it.

        After `close_stdin()`, or once the command exited or closed its stdin: `ConflictError`.

            handle = sandbox.spawn("cat", stdin=True); handle.send_stdin("hello\n"); handle.close_stdin()
        """
        await self._execd().send_command_stdin(self.id, data)

    async def close_stdin(self) -> None:
        """Close the command's stdin: it reads end-of-file after what was sent."""
        await self._execd().close_command_stdin(self.id)

    async def kill(self) -> None:
        """Stop the command: SIGTERM, then SIGKILL after a grace period (`DELETE /command?id=`).

        Returns once it has exited; one that has already exited is left as it is.
        """
        await self._execd().interrupt_command(self.id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, command={self.command!r})"
