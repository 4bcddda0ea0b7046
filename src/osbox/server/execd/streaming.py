"""Event framing for the execd streams (`POST /command`, `POST /session/{id}/run`).

Decision (wire-behaviour §4.1): events are framed as the reference execd frames them, one compact
JSON object followed by a blank line (`{...}\\n\\n`), no `data:` prefix; the official SDKs parse it.
Decision (§4.2): errors after `init` are appended as a bare `{code, message}` object.

Pieces:
- `frame(type, **fields)`: one event, with `timestamp` in Unix milliseconds.
- `LineSplitter`: bytes → output lines (CR, LF and CRLF all end a line; an empty line is "\\n";
  UTF-8 decoded with `errors="replace"` without ever splitting a multi-byte character).
- `EventChannel`: a bounded queue between the process reader and the HTTP response. When the
  client leaves, the response detaches it and later events are dropped, so the command carries on.
- `event_stream(...)`: the response body: events as they come plus a keepalive ping every 3 s.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

__all__ = [
    "KEEPALIVE_SECONDS",
    "EventChannel",
    "LineSplitter",
    "event_response",
    "frame",
    "now_ms",
]

KEEPALIVE_SECONDS = 3.0
#: A reader that takes no event for this long while the queue is full is treated as gone.
STALLED_READER_SECONDS = 60.0
#: A line longer than this is emitted in pieces, so one endless line cannot eat server memory.
MAX_LINE_BYTES = 1 << 20
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def now_ms() -> int:
    """The current time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def frame(event_type: str, **fields: Any) -> bytes:
    """One stream event: compact JSON then a blank line."""
    body = {"type": event_type, **fields, "timestamp": now_ms()}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class LineSplitter:
    """Turns a byte stream into text lines, one per output event.

    Splits on CR, LF and CRLF (a CR at the end of one chunk and an LF at the start of the next
    count as one CRLF). Since neither byte can occur inside a UTF-8 multi-byte sequence, decoding
    whole lines never splits a character; over-long lines go through an incremental decoder.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._after_cr = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return the lines they complete."""
        lines: list[str] = []
        start = 0
        if self._after_cr and data[:1] == b"\n":
            start = 1  # the LF of a CRLF split across two reads
        self._after_cr = False
        size = len(data)
        i = start
        while i < size:
            byte = data[i]
            if byte == 0x0A or byte == 0x0D:
                self._buffer += data[start:i]
                lines.append(self._take_line())
                if byte == 0x0D:
                    if i + 1 < size and data[i + 1] == 0x0A:
                        i += 1
                    elif i + 1 == size:
                        self._after_cr = True
                start = i + 1
            i += 1
        self._buffer += data[start:]
        while len(self._buffer) >= MAX_LINE_BYTES:
            piece = self._decoder.decode(bytes(self._buffer[:MAX_LINE_BYTES]))
            del self._buffer[:MAX_LINE_BYTES]
            if piece:
                lines.append(piece)
        return lines

    def flush(self) -> list[str]:
        """The partial last line (if any), at end of output."""
        if not self._buffer and not self._decoder.getstate()[0]:
            return []
        line = self._decoder.decode(bytes(self._buffer), final=True)
        self._buffer.clear()
        return [line] if line else []

    def _take_line(self) -> str:
        line = self._decoder.decode(bytes(self._buffer), final=True)
        self._buffer.clear()
        self._decoder.reset()
        return line if line else "\n"


_CLOSED = object()


class EventChannel:
    """Carries framed events from a producer task to at most one HTTP response.

    Bounded, so a slow reader slows the producer (as a pipe would); `detach()` (the client went
    away) makes every later `publish` a no-op so the producer never blocks on a dead reader.
    """

    def __init__(self, maxsize: int = 512) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.detached = False

    async def publish(self, event: bytes) -> None:
        """Queue one framed event (dropped when detached)."""
        await self._put(event)

    async def close(self) -> None:
        """No more events will follow."""
        await self._put(_CLOSED)

    async def _put(self, item: object) -> None:
        if self.detached:
            return
        if not self._queue.full():
            # The usual case, once per output line: no timer and no task (wait_for makes both).
            self._queue.put_nowait(item)
            return
        try:
            await asyncio.wait_for(self._queue.put(item), STALLED_READER_SECONDS)
        except TimeoutError:
            self.detach()

    def abort(self) -> None:
        """End the stream now, dropping what is still queued (the producer died)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        if not self.detached:
            self._queue.put_nowait(_CLOSED)
        self.detached = True

    def detach(self) -> None:
        """The reader is gone: drop what is queued and everything that follows."""
        self.detached = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def events(self) -> AsyncIterator[bytes]:
        """Events until `close`, with a keepalive ping whenever nothing came for 3 s."""
        try:
            while True:
                if not self._queue.empty():
                    item = self._queue.get_nowait()  # no timer for an event that is already there
                else:
                    try:
                        item = await asyncio.wait_for(self._queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield frame("ping", text="pong")
                        continue
                if item is _CLOSED:
                    return
                assert isinstance(item, bytes)
                yield item
        finally:
            self.detach()


def event_response(first: bytes, channel: EventChannel | None, tail: bytes = b"") -> StreamingResponse:
    """A `text/event-stream` response: `first` (the init event), the channel's events, then `tail`."""

    async def body() -> AsyncIterator[bytes]:
        yield first
        if channel is not None:
            events = channel.events()
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # type: ignore[attr-defined]
        if tail:
            yield tail

    return StreamingResponse(body(), media_type="text/event-stream", headers=STREAM_HEADERS)
