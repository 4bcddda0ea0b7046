"""A command's stdin, for both twins: what may be fed, its chunks, and the feeder running beside a stream.

    execd.run_command("wc -c", stdin=b"abc").run()               # bytes, str, a binary file, chunks
    await aexecd.run_command("wc -c", stdin=agen()).run()        # the async twin takes async iterators too

It rides on osbox's execd extension (`osbox.server.execd.stdin`): `POST /command` with the
`OSBOX-STDIN: pipe` header, then `POST /command/{id}/stdin[?eof=true]` with a streamed body. A
server without it (the reference execd) answers the first without the header: the SDK then stops
that command and raises `StdinNotSupportedError`.

A foreground command's input is sent while its output streams (a command that answers as it reads
would otherwise fill its output while we wait to finish its input), by a feeder: an asyncio task on
the async twin (`AsyncFeeder`), a daemon thread on the sync one (`Feeder`), which stops between
chunks once the stream has ended.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import IO, Any

import httpx2

from ._exceptions import APIStatusError, StdinNotSupportedError
from ._operation import APIRequest, no_content, path
from ._wire import COMMAND_ID_HEADER, STDIN_HEADER, STDIN_PIPE

__all__ = ["AsyncStdinSource", "StdinSource"]

#: What `stdin=` takes on the sync twin: bytes, str (UTF-8), a binary file, or an iterable of bytes.
StdinSource = bytes | bytearray | memoryview | str | IO[bytes] | Iterable[bytes]
#: The async twin also takes an async iterable of bytes.
AsyncStdinSource = StdinSource | AsyncIterable[bytes]

#: Bytes read from a file per chunk, and the most sent in one chunk of a bytes source.
CHUNK = 1024 * 1024
#: The request header asking for a stdin pipe.
PIPE_HEADERS = {STDIN_HEADER: STDIN_PIPE}


class _Stop:
    """Set once the stream has ended: a feeder stops between chunks."""

    def __init__(self) -> None:
        self.stopped = False
        #: Why the feeder failed (it stops the command first, then raises this).
        self.failure: BaseException | None = None


def _stdin_chunks(source: StdinSource, stop: _Stop) -> Iterator[bytes]:
    """The source as chunks of bytes, until it ends or `stop` is set."""
    if isinstance(source, str):
        source = source.encode()
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for start in range(0, len(view), CHUNK):
            if stop.stopped:
                return
            yield bytes(view[start : start + CHUNK])
        return
    # read1: what a pipe has now (at most one read), so a slow producer's bytes go on as they come.
    read = getattr(source, "read1", None) or getattr(source, "read", None)
    if callable(read):
        while not stop.stopped and (chunk := read(CHUNK)):
            if not isinstance(chunk, bytes):
                raise TypeError("stdin= takes a binary file (open(path, 'rb')), not a text one")
            yield chunk
        return
    for piece in source:
        if stop.stopped:
            return
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"stdin= iterators must yield bytes, not {type(piece).__name__}")
        yield bytes(piece)


async def _astdin_chunks(source: AsyncStdinSource, stop: _Stop) -> AsyncIterator[bytes]:
    """`_stdin_chunks` for the async twin, which also takes async iterables."""
    if not isinstance(source, AsyncIterable):
        for chunk in _stdin_chunks(source, stop):
            yield chunk
        return
    async for piece in source:
        if stop.stopped:
            return
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"stdin= iterators must yield bytes, not {type(piece).__name__}")
        yield bytes(piece)


def _stdin_request(command_id: str, content: Any, *, eof: bool) -> APIRequest[None]:
    """`POST /command/{id}/stdin`: `content` (bytes or chunks) to the command's stdin, then EOF if asked."""
    return APIRequest(
        "POST",
        path("/command/{id}/stdin", id=command_id),
        params={"eof": "true"} if eof else None,
        content=content,
        headers={"Content-Type": "application/octet-stream"},
        parse=no_content,
    )


def _signal_request(command_id: str, signal: str | int) -> APIRequest[None]:
    """`POST /command/{id}/signal`: a signal to the command's process group (osbox's extension)."""
    return APIRequest(
        "POST", path("/command/{id}/signal", id=command_id), json={"signal": signal}, parse=no_content
    )


def _piped_command_id(response: httpx2.Response, server: str) -> str:
    """The id of a command started with a stdin pipe; `StdinNotSupportedError` if the server gave none."""
    if response.headers.get(STDIN_HEADER, "").lower() == STDIN_PIPE and response.headers.get(
        COMMAND_ID_HEADER
    ):
        return response.headers[COMMAND_ID_HEADER]
    raise StdinNotSupportedError(server)


def _stdin_was_closed(exc: BaseException) -> bool:
    """Whether a feeder failed only because the command no longer reads (it closed stdin or exited)."""
    return isinstance(exc, APIStatusError) and exc.status_code == 409


class Feeder:
    """Runs `feed(stop)` in a daemon thread; `join` waits for it and re-raises its error."""

    def __init__(self, feed: Callable[[_Stop], object]) -> None:
        self.stop = _Stop()
        self._error: BaseException | None = None

        def run() -> None:
            try:
                feed(self.stop)
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, name="osbox-stdin", daemon=True)
        self._thread.start()

    def join(self, *, stop: bool) -> None:
        """Wait for the feeder and raise its error; with `stop`, tell it to stop and don't wait.

        A thread can't be cancelled: a stopped feeder still inside its source (a pipe nobody
        closes) or its request ends by itself, its request answered 409 since the command is over.
        """
        if stop:
            self.stop.stopped = True
        else:
            self._thread.join()
        error = self._error if not self._thread.is_alive() else None
        error = error or self.stop.failure
        if error is not None and not _stdin_was_closed(error):
            raise error


class AsyncFeeder:
    """Runs `feed(stop)` as an asyncio task; `join` waits for it (or cancels it) and re-raises its error."""

    def __init__(self, feed: Callable[[_Stop], Awaitable[object]]) -> None:
        self.stop = _Stop()
        self._task = asyncio.ensure_future(feed(self.stop))

    async def join(self, *, stop: bool) -> None:
        """Wait for the feeder (`stop`: cancel it first); raise its error."""
        if stop:
            self.stop.stopped = True
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not stop:
                raise
        except Exception as exc:
            if not _stdin_was_closed(exc):
                raise
