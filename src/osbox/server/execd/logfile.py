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
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_LOG_MAX_BYTES", "CommandLog", "LogChunk"]

DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC


@dataclass(frozen=True)
class LogChunk:
    """What one read returns: the bytes, the cursor after them, and how many bytes before them
    were dropped by the cap (0 when the read started where the caller asked)."""

    data: bytes
    next_cursor: int
    dropped: int


class CommandLog:
    """An append-only log whose oldest part is dropped beyond `max_bytes` (see the module docstring)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self.path = path
        self.previous_path = path.with_name(path.name + ".1")
        self._segment_max = max(1, max_bytes // 2)
        self._fd: int | None = os.open(path, _FLAGS, 0o600)
        self._base = 0  # offset in the whole output of the first byte of `path`
        self._previous_base: int | None = None  # same for `previous_path`, None when there is none
        #: Bytes written in all (the cursor after the newest byte).
        self.end = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`, first rotating when the newest segment is full. No-op once closed."""
        if self._fd is None or not data:
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

    @property
    def first_kept(self) -> int:
        """The cursor of the oldest byte still kept."""
        return self._base if self._previous_base is None else self._previous_base

    async def read(self, cursor: int, limit: int) -> LogChunk:
        """Up to `limit` bytes from `cursor` (from the oldest kept byte if `cursor` was dropped)."""
        start = max(cursor, self.first_kept)
        if start >= self.end:  # nothing new (a cursor past the end gets the end)
            return LogChunk(b"", self.end, 0)
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
