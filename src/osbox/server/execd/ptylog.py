"""A PTY session's output: what its one WebSocket reads live, and what a reconnect replays.

Every byte has an offset (a counter from 0 over the session's whole output, stdout and stderr
together); the newest `capacity` bytes are kept as chunks tagged with their channel. The one
connected client reads from the log by offset, so there is no second copy and no gap between
replay and live output. While a client is attached and more than `high_water` bytes behind, the
log asks its producer to pause reading the terminal (the process then blocks on a full pty, as
it would on a slow terminal) and to resume once the client has caught up: an attached client
never loses output. With nobody attached the producer keeps reading and the oldest bytes go.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["OutputLog"]

REPLAY_CAPACITY = 1 << 20  # the reference keeps 1 MiB too
HIGH_WATER = 256 * 1024


class OutputLog:
    """Output chunks by offset, with a wake-up for readers and flow control for the producer."""

    def __init__(self, capacity: int = REPLAY_CAPACITY, high_water: int = HIGH_WATER) -> None:
        self.capacity = capacity
        self.high_water = high_water
        self.total = 0  # offset after the last byte written
        self.ended = False  # no more output will come
        self._chunks: deque[tuple[int, int, bytes]] = deque()  # (offset, channel, data)
        self._kept = 0
        self._changed = asyncio.Event()
        #: The attached reader's offset (None: nobody attached) and the producer's switch.
        self.reader_offset: int | None = None
        self.pause_producer: Callable[[bool], None] = lambda paused: None
        self._paused = False

    @property
    def oldest(self) -> int:
        """Offset of the oldest byte still kept."""
        return self.total - self._kept

    def append(self, channel: int, data: bytes) -> None:
        """Record output; wake the reader; drop the oldest beyond capacity."""
        if not data:
            return
        self._chunks.append((self.total, channel, data))
        self.total += len(data)
        self._kept += len(data)
        while self._kept - len(self._chunks[0][2]) >= self.capacity:
            self._kept -= len(self._chunks.popleft()[2])
        if self._kept > self.capacity:  # trim the oldest chunk itself
            offset, chan, old = self._chunks[0]
            cut = self._kept - self.capacity
            self._chunks[0] = (offset + cut, chan, old[cut:])
            self._kept = self.capacity
        self._wake()
        behind = None if self.reader_offset is None else self.total - self.reader_offset
        if behind is not None and behind > self.high_water and not self._paused:
            self._paused = True
            self.pause_producer(True)

    def end(self) -> None:
        """The process's output is over."""
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_beyond(self, offset: int) -> None:
        """Return once there is output past `offset`, or the output has ended."""
        while self.total <= offset and not self.ended:
            await self._changed.wait()

    def read(self, since: int) -> tuple[int, bytes]:
        """Everything kept from `since` on, joined (channels merged), with the offset it starts at."""
        start = max(since, self.oldest)
        if start >= self.total:
            return self.total, b""
        return start, b"".join(data for _channel, data in self._pieces(start))

    def chunks_from(self, offset: int) -> list[tuple[int, bytes]]:
        """`(channel, bytes)` from `offset` on (or from the oldest kept), consecutive ones of one
        channel joined, so a burst of small writes goes out as few frames."""
        merged: list[tuple[int, bytes]] = []
        pending: list[bytes] = []
        current = -1
        for channel, data in self._pieces(max(offset, self.oldest)):
            if channel != current and pending:
                merged.append((current, b"".join(pending)))
                pending = []
            current = channel
            pending.append(data)
        if pending:
            merged.append((current, b"".join(pending)))
        return merged

    def _pieces(self, start: int) -> list[tuple[int, bytes]]:
        pieces = []
        for offset, channel, data in reversed(self._chunks):
            if offset + len(data) <= start:
                break
            pieces.append((channel, data[start - offset :] if offset < start else data))
        pieces.reverse()
        return pieces

    def attach(self, offset: int) -> None:
        """A reader is attached, at `offset`."""
        self.reader_offset = offset

    def consumed(self, offset: int) -> None:
        """The attached reader has sent everything before `offset`."""
        self.reader_offset = offset
        if self._paused and self.total - offset <= self.high_water // 2:
            self._paused = False
            self.pause_producer(False)

    def detach(self) -> None:
        """Nobody reads: the producer goes on (the oldest output is dropped past capacity)."""
        self.reader_offset = None
        if self._paused:
            self._paused = False
            self.pause_producer(False)
