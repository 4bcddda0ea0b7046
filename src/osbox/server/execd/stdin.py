"""Input to a running command, an osbox extension of the execd API: its stdin, and signals.

The OpenSandbox execd gives every command `/dev/null` as stdin and has no way to signal one but
`DELETE /command` (SIGTERM, then SIGKILL). osbox adds, ignored by (or absent from) the reference:

- `POST /command` with the request header `OSBOX-STDIN: pipe`: the command's stdin is a pipe that
  stays open until the client closes it. The response then carries `OSBOX-STDIN: pipe` and
  `OSBOX-COMMAND-ID: <id>`, so a client knows at once that the server has the extension (the
  reference answers without them, and the command there reads an empty stdin).
- `POST /command/{id}/stdin[?eof=true]`: the request body (streamed, any size) is written to that
  pipe, in order, before the answer (`{"written": N}`); with `eof=true` the pipe is closed after
  the body, so the command reads end-of-file exactly after the last byte. Requests are serialised
  per command. Once the command has closed its stdin or exited, or after an `eof`, the answer is
  409 `STDIN_CLOSED`, sent after the rest of the body has been read (so the client is never cut
  off mid-send); a command started without the header answers 409 `STDIN_NOT_PIPED`.
- `POST /command/{id}/signal` with `{"signal": "SIGINT"}` (a name or a number): the signal goes
  to the command's process group at once (Ctrl-C in `osbox exec`); 409 once the command has exited.

`StdinPipe` is the server's end of the pipe: a non-blocking write end, written with the event loop
waiting for room, so a command that does not read blocks only its own stdin requests. A python cell
has no process of its own to read the pipe: the server reads it for the kernel (`PipeLines`), a line
for each `input()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from osbox._wire import COMMAND_ID_HEADER, STDIN_HEADER, STDIN_PIPE

from .errors import CONTEXT_NOT_FOUND, ExecdError, bad_request, not_found
from .inputs import json_body, json_object
from .state import SandboxApi

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from .runner import Execution

__all__ = [
    "STDIN_CLOSED",
    "CommandInputApi",
    "PipeLines",
    "StdinClosed",
    "StdinPipe",
    "announce_pipe",
    "pipe_for",
    "pipe_requested",
]

STDIN_CLOSED = "STDIN_CLOSED"
STDIN_NOT_PIPED = "STDIN_NOT_PIPED"
#: A larger pipe than Linux's default 64 KiB: fewer wake-ups per megabyte fed (best effort).
PIPE_BYTES = 1024 * 1024


class StdinClosed(Exception):
    """The pipe is closed: by the client (eof), by the command (EPIPE), or because it exited."""


class StdinPipe:
    """A command's stdin: the child's read end (handed to `spawn`) and our non-blocking write end."""

    def __init__(self) -> None:
        self.child_fd, self._fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._fd, False)
        # Over /proc/sys/fs/pipe-max-size for an unprivileged server: the default will do.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.lock = asyncio.Lock()
        self._room: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """True once the write end is closed."""
        return self._fd < 0

    def release_child_end(self) -> None:
        """Close our copy of the read end once the child has its own."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    async def write(self, data: bytes | memoryview) -> None:
        """Write all of `data`, waiting for room as the command reads; `StdinClosed` if it can't."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            if self._fd < 0:
                raise StdinClosed
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                self._room = loop.create_future()
                loop.add_writer(self._fd, self._on_room)
                try:
                    await self._room
                finally:
                    self._room = None
                    if self._fd >= 0:
                        loop.remove_writer(self._fd)
            except BrokenPipeError:
                self.close()
                raise StdinClosed from None

    def _on_room(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def close(self) -> None:
        """Close the write end (the command reads end-of-file); a waiting `write` fails. Idempotent."""
        self.release_child_end()
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        if self._room is not None:
            asyncio.get_running_loop().remove_writer(fd)
            if not self._room.done():
                self._room.set_exception(StdinClosed())
        os.close(fd)


class PipeLines:
    """The read end of a `StdinPipe`, read by the server itself, a line at a time (for a python cell's
    `input()`, which the kernel asks its client for). Takes the pipe's child end; `close` releases it."""

    def __init__(self, pipe: StdinPipe) -> None:
        self._fd = os.dup(pipe.child_fd)  # ours now, as a child's copy would be
        pipe.release_child_end()
        os.set_blocking(self._fd, False)
        self._buffer = bytearray()
        self._eof = False

    async def readline(self) -> bytes | None:
        """The next line with its newline (the last one may have none); None at the end."""
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer and not self._eof:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self._fd, _settle, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(self._fd)
                continue
            self._eof = not chunk
            self._buffer += chunk
        if not self._buffer:
            return None
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    def close(self) -> None:
        """Close the read end (idempotent): a writer then gets `STDIN_CLOSED`."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def pipe_requested(headers: Headers) -> bool:
    """Whether the request asks for a stdin pipe (`OSBOX-STDIN: pipe`)."""
    return headers.get(STDIN_HEADER, "").lower() == STDIN_PIPE


def pipe_for(headers: Headers) -> StdinPipe | None:
    """A stdin pipe for a run whose request asks for one, else None (it reads /dev/null)."""
    return StdinPipe() if pipe_requested(headers) else None


def announce_pipe(response: Response, run_id: str) -> None:
    """Tell the client its run reads a pipe, fed by `POST /command/{run_id}/stdin`."""
    response.headers[STDIN_HEADER] = STDIN_PIPE
    response.headers[COMMAND_ID_HEADER] = run_id


def _signal_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request("'signal' must be a signal name (e.g. SIGINT) or number")
    try:
        if isinstance(value, int):
            return int(signal.Signals(value))
        name = value.upper()
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except (KeyError, ValueError):
        raise bad_request(f"unknown signal {value!r}; use a name such as SIGINT or a number") from None


class CommandInputApi(SandboxApi):
    """`POST /command/{id}/stdin` and `POST /command/{id}/signal` over the commands' state."""

    def _command(self, request: Request) -> Execution:
        run_id = request.path_params["id"]
        found = self._state(request).find_run(run_id)
        if found is None:
            raise not_found(f"command {run_id} not found", CONTEXT_NOT_FOUND)
        return found

    async def stdin(self, request: Request) -> Response:
        """`POST /command/{id}/stdin[?eof=true]`: write the body to the command's stdin (then close it)."""
        execution = self._command(request)
        eof = request.query_params.get("eof", "false").lower()
        if eof not in ("true", "false", "1", "0"):
            raise bad_request("'eof' must be true or false")
        pipe = execution.stdin
        if pipe is None:
            await _discard(request.stream())
            raise ExecdError(
                409, STDIN_NOT_PIPED, f"command {execution.id} was started without 'OSBOX-STDIN: pipe'"
            )
        written = 0
        body = request.stream()
        async with pipe.lock:
            try:
                async for chunk in body:
                    await pipe.write(chunk)
                    written += len(chunk)
            except ClientDisconnect:
                raise bad_request(f"the body ended early ({written} bytes written)") from None
            except StdinClosed:
                await _discard(body)
                message = f"the stdin of command {execution.id} is closed ({written} bytes written)"
                raise ExecdError(409, STDIN_CLOSED, message) from None
            if eof in ("true", "1"):
                pipe.close()
        return JSONResponse({"written": written})

    async def signal(self, request: Request) -> Response:
        """`POST /command/{id}/signal` `{"signal": "SIGINT"}`: signal the command's process group."""
        execution = self._command(request)
        number = _signal_number(json_object(await json_body(request)).get("signal"))
        if execution.process is None or not execution.running:
            raise ExecdError(409, "COMMAND_EXITED", f"command {execution.id} has exited")
        execution.process.signal_group(number)
        return Response(status_code=200)


async def _discard(body: AsyncIterator[bytes]) -> None:
    """Read the rest of the body, so the client can finish sending before it reads the answer."""
    with contextlib.suppress(ClientDisconnect):  # the client left: nobody reads the answer either
        async for _ in body:
            pass
