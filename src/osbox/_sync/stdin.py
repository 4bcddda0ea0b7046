# Generated from src/osbox/_async/stdin.py by scripts/unasync.py: do not edit.
"""`PipedStream`: the stream of a command started with a stdin pipe, feeding it as it runs.

    with execd.run_command("sort", stdin=b"b\\na\\n") as stream:   # what run_command(stdin=...) returns
        for event in stream: ...

On first use it checks that the server gave the command a pipe (else it stops the command as
`unpiped` says, and raises `StdinNotSupportedError`), then feeds `stdin` beside the output: a
foreground command's feeder stops when the stream ends, a background one's is waited for (its
input is all written by the time the stream closes). See `osbox._stdin` for what is shared with the sync twin.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Literal

import httpx2

from .._exceptions import OsboxError, StdinNotSupportedError
from .._stdin import (
    Feeder,
    StdinSource,
    _piped_command_id,
    _stdin_chunks,
    _stdin_request,
    _stdin_was_closed,
    _Stop,
)
from ..models.events import Execution, StreamEvent
from .streaming import Stream

if TYPE_CHECKING:
    from .._operation import StreamRequest
    from .execd import ExecdClient

__all__ = ["PipedStream", "StopUnpiped"]

#: How to stop a run the server started without a pipe, by the id in its `init` event: `DELETE
#: /command?id=`, `DELETE /code?id=` (interrupts the cell), or not at all (a session run: on the
#: reference, stopping one deletes its session).
StopUnpiped = Literal["command", "code", "none"]


class PipedStream(Stream[StreamEvent, Execution]):
    """A command stream whose command reads `stdin` (None: the pipe stays open for `send_command_stdin`)."""

    def __init__(
        self,
        execd: ExecdClient,
        spec: StreamRequest[StreamEvent, Execution],
        stdin: StdinSource | None,
        *,
        background: bool,
        unpiped: StopUnpiped = "command",
    ) -> None:
        super().__init__(execd, spec)
        self._execd = execd
        self._stdin = stdin
        self._background = background
        self._unpiped = unpiped
        self._feeder: Feeder | None = None
        #: The command's id, known as soon as the stream is open.
        self.command_id: str | None = None

    def _open(self) -> httpx2.Response:
        started = self._response is not None
        response = super()._open()
        if not started:
            try:
                self.command_id = _piped_command_id(response, self._execd.base_url)
            except StdinNotSupportedError:
                self._stop_unpiped(response)
                raise
            if self._stdin is not None:
                self._feeder = Feeder(self._feed)
        return response

    def _feed(self, stop: _Stop) -> None:
        assert self.command_id is not None and self._stdin is not None
        chunks = _stdin_chunks(self._stdin, stop)
        try:
            self._execd._call(_stdin_request(self.command_id, chunks, eof=True))
        except Exception as exc:
            if not _stdin_was_closed(exc):
                stop.failure = exc  # known at once, even to a join that does not wait for the feeder
                # Its input broke off (the source raised, the connection failed): stop the command
                # rather than let it take what came as the whole input; the stream's end raises `exc`.
                with contextlib.suppress(OsboxError):
                    self._execd.interrupt_command(self.command_id)
            raise

    def _stop_unpiped(self, response: httpx2.Response) -> None:
        """The server started the command without a pipe: stop it (its id is in the first event)."""
        head = b""
        if self._unpiped == "none":
            self.close()
            return
        try:
            for chunk in response.iter_bytes():
                head += chunk
                if b"\n\n" in head or len(head) > 65536:
                    break
            first = json.loads(head.split(b"\n\n", 1)[0].removeprefix(b"data:"))
            if isinstance(first, dict) and first.get("type") == "init" and first.get("text"):
                if self._unpiped == "code":
                    self._execd.interrupt_code(str(first["text"]))
                else:
                    self._execd.interrupt_command(str(first["text"]))
        except (ValueError, httpx2.HTTPError, OsboxError):
            pass  # nothing more to do: the error raised says what happened
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection and stop (foreground) or wait for (background) the stdin feeder."""
        try:
            super().close()
        finally:
            feeder, self._feeder = self._feeder, None
            if feeder is not None:
                feeder.join(stop=not self._background)
