"""A command's output, from its pipe to framed events: the hot path of every command stream.

`pump(fd, on_chunk)` reads a pipe in big chunks (its buffer grown to `PIPE_BYTES`, so one read
takes up to a megabyte); `on_chunk` gets each chunk and may await (back-pressure: while it waits,
nothing is read and the command blocks on its full pipe, as it would writing to a slow terminal).

A framer turns the chunks of one stream (stdout or stderr) into events, many per call, as one
`bytes` the response writes at once:

- `LineFramer`, the reference's framing (wire-behaviour §1.4): one event per line without its
  ending (CR, LF and CRLF all end a line; an empty line is "\\n"); bytes that are not UTF-8 are
  replaced (U+FFFD); a line longer than `MAX_LINE_BYTES` comes in pieces, so one endless line cannot
  eat the server's memory.
- `ExactFramer`, osbox's exact framing (asked for with the `OSBOX-OUTPUT-FRAMING: exact` request
  header): one event per chunk read, holding the bytes exactly as written; bytes that are not UTF-8
  arrive as `\\udcXX` escapes (Python's surrogateescape: `text.encode("utf-8", "surrogateescape")`
  gives back the bytes), and a character split between two reads is held back until it is whole.

The framing is done in C by `osbox._speedups` (`line_frames`, `exact_frame`); the pure-Python
versions here are the fallback where it could not be built, and the reference the tests hold the
C code to. Either is a few calls per chunk, never a Python step per line.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import fcntl
import functools
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from osbox._wire import OUTPUT_FRAMING_EXACT, OUTPUT_FRAMING_HEADER

from .streaming import now_ms

__all__ = [
    "MAX_LINE_BYTES",
    "ExactFramer",
    "LineFramer",
    "OutputFramer",
    "framer_for",
    "framing_headers",
    "framing_of",
    "pump",
]

#: A longer line is framed in pieces of this size (line framing).
MAX_LINE_BYTES = 1 << 20
#: The pipe buffer asked for (`F_SETPIPE_SZ`; the kernel caps it at `/proc/sys/fs/pipe-max-size`).
PIPE_BYTES = 1 << 20
#: At most this much is read at once.
READ_BYTES = 1 << 20
#: Once a pipe has given this much, a read of less than `COALESCE_BELOW_BYTES` is followed by a
#: pause of `COALESCE_SECONDS` before the next (see `pump`).
COALESCE_AFTER_BYTES = 1 << 20
COALESCE_BELOW_BYTES = 256 << 10
COALESCE_SECONDS = 0.001
#: glibc's `mallopt` parameters (malloc.h) and what the server sets them to (see `keep_heap`).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD_BYTES = 8 << 20
TRIM_THRESHOLD_BYTES = 16 << 20

_TIMESTAMP: Final = b'","timestamp":'
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_SURROGATE: Final = re.compile("[\udc80-\udcff]")

#: Output bytes: a view of the reader's buffer, or bytes.
Data = bytes | memoryview
LineFrames = Callable[[bytes, Data, int, bytes, int], tuple[bytes, int, int]]
ExactFrame = Callable[[bytes, Data, bytes, bool], tuple[bytes, int]]


def _json_body(text: str) -> bytes:
    """`text` as the inside of a JSON string, as json.dumps writes it (non-ASCII kept), except that
    the lone surrogates of surrogateescape are written as `\\udcXX` escapes."""
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    return _SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", body).encode()


def _line_frames_py(
    prefix: bytes, data: Data, start: int, suffix: bytes, max_line: int
) -> tuple[bytes, int, int]:
    """The pure-Python `osbox._speedups.line_frames` (see the module docstring)."""
    data = bytes(data)
    parts: list[bytes] = []
    pos = start
    for end in _LINE_END.finditer(data, start):
        line = data[pos : end.start()]
        if len(line) > max_line:
            break
        try:
            text = line.decode() if line else "\n"
        except UnicodeDecodeError:
            break
        parts += (prefix, _json_body(text), suffix)
        pos = end.end()
    return b"".join(parts), pos, len(parts) // 3


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of `data` start a UTF-8 character the next bytes may complete."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if need <= back:
                return 0
            try:
                data[-back:].decode()
            except UnicodeDecodeError as exc:
                return back if exc.reason == "unexpected end of data" else 0
            return 0
    return 0


def _exact_frame_py(prefix: bytes, data: Data, suffix: bytes, final: bool) -> tuple[bytes, int]:
    """The pure-Python `osbox._speedups.exact_frame` (see the module docstring)."""
    data = bytes(data)
    stop = len(data) - (0 if final else _incomplete_tail(data))
    if stop <= 0:
        return b"", 0
    text = data[:stop].decode("utf-8", "surrogateescape")
    return prefix + _json_body(text) + suffix, stop


line_frames: LineFrames
exact_frame: ExactFrame
try:
    from osbox._speedups import exact_frame, line_frames
except ImportError:  # installed where no C compiler was at hand
    line_frames, exact_frame = _line_frames_py, _exact_frame_py


def _affixes(kind: str) -> tuple[bytes, bytes]:
    """What goes before and after an event's text: its type, and the time now."""
    return b'{"type":"' + kind.encode() + b'","text":"', _TIMESTAMP + str(now_ms()).encode() + b"}\n\n"


class OutputFramer:
    """Turns the chunks of one output stream into framed events (see the module docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def feed(self, chunk: Data) -> bytes:
        """The events the chunk completes (possibly none); `chunk` is not kept."""
        raise NotImplementedError

    def flush(self) -> bytes:
        """The events of what is still held, at the end of output."""
        raise NotImplementedError


class LineFramer(OutputFramer):
    """One event per line, as the reference frames output."""

    def __init__(self, kind: str, *, frames: LineFrames | None = None) -> None:
        super().__init__(kind)
        self._frames = frames or line_frames
        self._pending = b""  # the start of a line whose end has not come yet
        self._after_cr = False  # the last chunk ended in CR: an LF first in the next one is its CRLF

    def feed(self, chunk: Data) -> bytes:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if not chunk:
            return b""
        self._after_cr = chunk[-1:] == b"\r"
        data = self._pending + chunk if self._pending else chunk
        prefix, suffix = _affixes(self.kind)
        out: list[bytes] = []
        pos = 0
        while True:
            frames, pos, _ = self._frames(prefix, data, pos, suffix, MAX_LINE_BYTES)
            out.append(frames)
            end = _LINE_END.search(data, pos)
            if end is None:
                break
            # A line the fast path leaves to us: not UTF-8, or too long.
            out += self._texts(prefix, suffix, data[pos : end.start()] or b"\n")
            pos = end.end()
        rest = bytes(data[pos:])  # kept: a copy, never a view of the reader's buffer
        while len(rest) > MAX_LINE_BYTES:  # an endless line: frame what came in pieces
            cut = MAX_LINE_BYTES
            while cut > MAX_LINE_BYTES - 3 and 0x80 <= rest[cut] < 0xC0:
                cut -= 1  # not inside a character
            out += self._texts(prefix, suffix, rest[:cut])
            rest = rest[cut:]
        self._pending = rest
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not rest:
            return b""
        prefix, suffix = _affixes(self.kind)
        return b"".join(self._texts(prefix, suffix, rest))

    @staticmethod
    def _texts(prefix: bytes, suffix: bytes, line: Data) -> list[bytes]:
        """Events for one line (or piece) decoded with replacement, in pieces of `MAX_LINE_BYTES`."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        texts = [decoder.decode(line[i : i + MAX_LINE_BYTES]) for i in range(0, len(line), MAX_LINE_BYTES)]
        texts[-1] += decoder.decode(b"", final=True)  # a cut-off character at the end: one U+FFFD
        return [prefix + _json_body(text) + suffix for text in texts if text]


class ExactFramer(OutputFramer):
    """One event per chunk, holding exactly the bytes written (osbox's exact framing)."""

    def __init__(self, kind: str, *, frame: ExactFrame | None = None) -> None:
        super().__init__(kind)
        self._frame = frame or exact_frame
        self._held = b""  # the start of a character split between two reads

    def feed(self, chunk: Data) -> bytes:
        return self._take(chunk, final=False)

    def flush(self) -> bytes:
        return self._take(b"", final=True)

    def _take(self, chunk: Data, *, final: bool) -> bytes:
        data = self._held + chunk if self._held else chunk
        if not data:
            return b""
        prefix, suffix = _affixes(self.kind)
        frame, used = self._frame(prefix, data, suffix, final)
        self._held = bytes(data[used:])  # at most 3 bytes, copied out of the reader's buffer
        return frame


def framing_of(headers: Mapping[str, str]) -> str:
    """The framing a request asks for: "exact" with `OSBOX-OUTPUT-FRAMING: exact`, else "lines"."""
    asked = headers.get(OUTPUT_FRAMING_HEADER, "").strip().lower()
    return OUTPUT_FRAMING_EXACT if asked == OUTPUT_FRAMING_EXACT else "lines"


def framing_headers(framing: str) -> dict[str, str]:
    """The response headers that tell the client which framing it gets (none for the reference's)."""
    return {OUTPUT_FRAMING_HEADER: OUTPUT_FRAMING_EXACT} if framing == OUTPUT_FRAMING_EXACT else {}


def framer_for(framing: str, kind: str) -> OutputFramer:
    """The framer of one output stream: `ExactFramer` for `"exact"`, else `LineFramer`."""
    return ExactFramer(kind) if framing == OUTPUT_FRAMING_EXACT else LineFramer(kind)


@functools.cache
def keep_heap() -> bool:
    """Have glibc's malloc serve the output path's megabyte buffers from its heap, and keep up to
    `TRIM_THRESHOLD_BYTES` of freed heap mapped; once per process, True if it took.

    Each chunk read makes a few objects of a megabyte or more (its frame, allocated at the worst
    case and cut to size, and the server's chunked write of it). Above glibc's mmap threshold each one
    is a fresh mapping: mapped, its pages faulted in and zeroed, then unmapped, which cost the server
    about a sixth of its time on a command's output. glibc raises the threshold by itself after such
    a free, but only to the size the frame was cut to, so the next worst-case allocation maps again.
    A fixed threshold turns that off (and holds in every arena); the trim threshold keeps the freed
    space for the next chunk instead of returning it to the kernel each time.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


async def pump(fd: int, on_chunk: Callable[[memoryview], Awaitable[None]]) -> None:
    """Read the pipe `fd` until end of file, handing each chunk to `on_chunk`; closes `fd`.

    The chunk is a view of a buffer the next read reuses (no allocation per read): `on_chunk` must
    copy what it keeps. The loop watches the pipe only while nothing is there to read, so a pump
    held up by a slow reader costs no wake-ups. Cancelling it stops reading.

    A command streaming output writes it a few KiB at a time (`yes`, `seq`, stdio's buffers): read
    as soon as it is there, a megabyte came in hundreds of reads, each framed, queued, written and
    decoded on its own (a read of 8 KiB was the median in most runs of 200 MB), and that work per
    chunk cost the server and the client a fifth of their time. So once a pipe has given
    `COALESCE_AFTER_BYTES` (a command that prints a line, or a little now and then, never waits), a
    small read is followed by a pause of `COALESCE_SECONDS` while the pipe fills: the reads grow to
    hundreds of KiB, and output is late by at most that pause.
    """
    keep_heap()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):  # a bigger buffer only saves wake-ups
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.set_blocking(fd, False)
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    total = 0
    try:
        while True:
            try:
                size = os.readv(fd, [buffer])
            except BlockingIOError:
                readable = loop.create_future()
                loop.add_reader(fd, readable.set_result, None)
                try:
                    await readable
                finally:
                    loop.remove_reader(fd)
                continue
            if not size:
                return
            await on_chunk(view[:size])
            total += size
            if size < COALESCE_BELOW_BYTES and total >= COALESCE_AFTER_BYTES:
                await asyncio.sleep(COALESCE_SECONDS)
    finally:
        view.release()
        os.close(fd)
