"""Event framing for the execd streams (`POST /command`, `POST /session/{id}/run`).

Decision (wire-behaviour §4.1): events are framed as the reference execd frames them, one compact
JSON object followed by a blank line (`{...}\\n\\n`), no `data:` prefix; the official SDKs parse it.
Decision (§4.2): errors after `init` are appended as a bare `{code, message}` object.

Pieces:
- `frame(type, **fields)`: one event, with `timestamp` in Unix milliseconds.
- `EventChannel`: a queue bounded by bytes between the process reader and the HTTP response, which
  writes whatever is queued in one piece. When the client leaves, the response detaches it and later
  events are dropped, so the command carries on. (Output is framed in `output.py`.)
- `event_stream(...)`: the response body: events as they come plus a keepalive ping every 3 s.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import StreamingResponse

__all__ = [
    "KEEPALIVE_SECONDS",
    "EventChannel",
    "event_response",
    "frame",
    "now_ms",
    "parse_frames",
]

KEEPALIVE_SECONDS = 3.0
#: A reader that takes no event for this long while the queue is full is treated as gone.
STALLED_READER_SECONDS = 60.0
#: How many bytes of events a channel holds before its producer waits for the reader.
CHANNEL_BYTES = 4 << 20
#: Queued events smaller than this in all are joined into one write.
JOIN_BELOW_BYTES = 256 << 10
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def now_ms() -> int:
    """The current time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def frame(event_type: str, **fields: Any) -> bytes:
    """One stream event: compact JSON then a blank line."""
    body = {"type": event_type, **fields, "timestamp": now_ms()}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """The events in `data`: what `EventChannel.events()` yields may hold many frames at once."""
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


class EventChannel:
    """Carries framed events from a producer task to at most one HTTP response.

    Bounded by bytes (`max_bytes`), so a slow reader slows the producer (as a pipe would); the
    reader takes everything queued at once and writes it as one piece. `detach()` (the client went
    away) makes every later `publish` a no-op so the producer never blocks on a dead reader.
    """

    def __init__(self, max_bytes: int = CHANNEL_BYTES) -> None:
        self._max_bytes = max_bytes
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.detached = False

    async def publish(self, events: bytes) -> None:
        """Queue framed events (one or many; dropped when detached), waiting while the queue is full."""
        if self.detached or not events:
            return
        if self._queued >= self._max_bytes:
            try:
                await asyncio.wait_for(self._writable.wait(), STALLED_READER_SECONDS)
            except TimeoutError:
                self.detach()
            if self.detached:
                return
        self._queue.append(events)
        self._queued += len(events)
        self._readable.set()
        if self._queued >= self._max_bytes:
            self._writable.clear()

    async def close(self) -> None:
        """No more events will follow."""
        self._closed = True
        self._readable.set()

    def abort(self) -> None:
        """End the stream now, dropping what is still queued (the producer died)."""
        self._drop()
        self._closed = True
        self._readable.set()
        self.detached = True

    def detach(self) -> None:
        """The reader is gone: drop what is queued and everything that follows."""
        self.detached = True
        self._drop()

    def _drop(self) -> None:
        self._queue.clear()
        self._queued = 0
        self._writable.set()  # a producer waiting for room goes on (and drops what it has)

    def _take(self) -> list[bytes]:
        """Everything queued, in as few pieces as are worth writing: small events are joined, big
        ones (output chunks of the exact framing) are not copied again."""
        queued = list(self._queue) if self._queued >= JOIN_BELOW_BYTES else [b"".join(self._queue)]
        self._queue.clear()
        self._queued = 0
        self._readable.clear()
        self._writable.set()
        return queued

    async def events(self) -> AsyncIterator[bytes]:
        """Queued events, many at a time, until `close`, with a keepalive ping whenever nothing
        came for 3 s."""
        try:
            while True:
                if self._queue:
                    for piece in self._take():
                        yield piece
                    continue
                if self._closed:
                    return
                self._readable.clear()
                try:
                    await asyncio.wait_for(self._readable.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield frame("ping", text="pong")
        finally:
            self.detach()


def event_response(
    first: bytes, channel: EventChannel | None, tail: bytes = b"", headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """A `text/event-stream` response: `first` (the init event), the channel's events, then `tail`;
    `headers` are added to the stream's own."""

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

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={**STREAM_HEADERS, **(headers or {})}
    )
