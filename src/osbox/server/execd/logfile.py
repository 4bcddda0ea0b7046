"""A command's output log on the host, capped: the newest output is kept, the oldest dropped.

A command may print without end (`yes`), so its log cannot simply grow. `CommandLog` keeps it in
two segment files: output is appended to `<name>` until that holds half the cap, then `<name>` is
renamed over `<name>.1` (dropping the segment before it) and a fresh `<name>` starts. So between
half the cap and the whole cap of the newest output is kept, and nothing is ever copied.

Cursors stay meaningful: a cursor is an absolute byte offset in the command's whole output (what
the reference's offset into its never-truncated log is). `read(cursor)` answers from the oldest
kept byte when the bytes at `cursor` were dropped, and says how many it skipped.

    log = CommandLog(Path("/data/execd/<sandbox>/<command>.log"), max_bytes=64 << 20)
    log.write(b"output")            # from the event loop, as output arrives
    chunk = await log.read(0, 8 << 20)
    log.close(); log.remove()

`path` (the newest segment) is always a readable file, so a tail of it shows the latest output.

`ring=True` keeps the log in one file of `max_bytes` instead, written in place, wrapping at its end
(the newest `max_bytes` are kept). That is for the copy of a foreground command's output, which is
read only through `read` (a tail of the file is the latest output only until it wraps): rotating
allocates page-cache pages for every byte written and frees them again with each dropped segment,
the cost of which (~1.3 ms per MB, the server's event loop blocked in `unlink`) was a fifth of what
streaming output cost the server; overwriting pages in place costs their copy only.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_LOG_MAX_BYTES", "CommandLog", "LogChunk"]

DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
_RING_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True)
class LogChunk:
    """What one read returns: the bytes, the cursor after them, and how many bytes before them
    were dropped by the cap (0 when the read started where the caller asked)."""

    data: bytes
    next_cursor: int
    dropped: int


class CommandLog:
    """An append-only log whose oldest part is dropped beyond `max_bytes` (see the module docstring)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_LOG_MAX_BYTES, *, ring: bool = False) -> None:
        self.path = path
        self.previous_path = path.with_name(path.name + ".1")
        self._segment_max = max(1, max_bytes // 2)
        #: The ring's size (`ring=True`), else None.
        self._ring = max(1, max_bytes) if ring else None
        self._fd: int | None = os.open(path, _RING_FLAGS if ring else _FLAGS, 0o600)
        self._base = 0  # offset in the whole output of the first byte of `path`
        self._previous_base: int | None = None  # same for `previous_path`, None when there is none
        #: Bytes written in all (the cursor after the newest byte).
        self.end = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`, first rotating when the newest segment is full. No-op once closed."""
        if self._fd is None or not data:
            return
        if self._ring is not None:
            self._write_ring(self._fd, self._ring, memoryview(data))
            return
        if self.end - self._base >= self._segment_max:
            os.close(self._fd)
            self._fd = None
            os.replace(self.path, self.previous_path)  # the segment before it is dropped here
            self._previous_base, self._base = self._base, self.end
            self._fd = os.open(self.path, _FLAGS, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.end += len(data)

    def _write_ring(self, fd: int, ring: int, data: memoryview) -> None:
        """Write `data` at its place in the ring, wrapping at the end (only its newest `ring` bytes
        when it is longer)."""
        end = self.end + len(data)
        data = data[-ring:]
        offset = (end - len(data)) % ring
        while data:
            written = os.pwrite(fd, data[: ring - offset], offset)
            data = data[written:]
            offset = (offset + written) % ring
        self.end = end

    @property
    def first_kept(self) -> int:
        """The cursor of the oldest byte still kept."""
        if self._ring is not None:
            return max(0, self.end - self._ring)
        return self._base if self._previous_base is None else self._previous_base

    async def read(self, cursor: int, limit: int) -> LogChunk:
        """Up to `limit` bytes from `cursor` (from the oldest kept byte if `cursor` was dropped)."""
        start = max(cursor, self.first_kept)
        if start >= self.end:  # nothing new (a cursor past the end gets the end)
            return LogChunk(b"", self.end, 0)
        if self._ring is not None:
            return await self._read_ring(self._ring, cursor, start, min(limit, self.end - start))
        # The segments are opened here, in the loop thread, where rotation happens: an open fd
        # keeps its file's bytes whatever is renamed later. The reading runs in a thread.
        segments: list[tuple[int, int]] = []
        try:
            if self._previous_base is not None and start < self._base:
                previous = os.open(self.previous_path, os.O_RDONLY | os.O_CLOEXEC)
                segments.append((self._previous_base, previous))
            segments.append((self._base, os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError:
            _close_all(segments)
            return LogChunk(b"", self.end, 0)  # removed meanwhile (the sandbox is going away)
        data = await asyncio.to_thread(_read_segments, segments, start, min(limit, self.end - start))
        return LogChunk(data, start + len(data), start - cursor)

    async def _read_ring(self, ring: int, cursor: int, start: int, length: int) -> LogChunk:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return LogChunk(b"", self.end, 0)  # removed meanwhile (the sandbox is going away)
        lap = start - start % ring  # the cursor of the file's first byte in the lap `start` is in
        pieces = [(lap, fd)]
        if start % ring + length > ring:  # and the rest from the file's start, one lap on
            pieces.append((lap + ring, os.dup(fd)))
        data = await asyncio.to_thread(_read_segments, pieces, start, length)
        # Output written while the thread read may have overwritten the oldest of it: what is still
        # kept now (writes happen on this thread, none is under way) was read as it was written.
        overwritten = max(0, self.first_kept - start)
        data, start = data[overwritten:], start + overwritten
        return LogChunk(data, start + len(data), start - cursor)

    def close(self) -> None:
        """Stop writing (the files stay readable)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the files."""
        self.close()
        for path in (self.path, self.previous_path):
            path.unlink(missing_ok=True)


def _read_segments(segments: list[tuple[int, int]], start: int, length: int) -> bytes:
    """`length` bytes from offset `start` out of the open segments [(base, fd)], oldest first;
    closes the fds."""
    parts: list[bytes] = []
    try:
        for base, fd in segments:
            if length <= 0:
                break
            data = os.pread(fd, length, max(0, start - base))
            parts.append(data)
            start += len(data)
            length -= len(data)
    finally:
        _close_all(segments)
    return b"".join(parts)


def _close_all(segments: list[tuple[int, int]]) -> None:
    for _base, fd in segments:
        os.close(fd)
