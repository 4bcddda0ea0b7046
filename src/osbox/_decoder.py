"""The one stream parser: bytes in, JSON objects out. No I/O, so sync and async streams share it.

OpenSandbox servers frame streamed events three ways, and all three parse here:

- SSE: `event:`, `data:` (several lines join with "\\n"), `id:` lines; a blank line dispatches;
  `:` comments and `retry:` are ignored. An `event:` name fills in a missing `type`.
- bare JSON objects separated by a blank line (what the reference execd really sends);
- NDJSON: one JSON object per line, no blank lines.

    decoder = EventDecoder()
    for chunk in chunks:
        for obj in decoder.feed(chunk):
            ...
    trailing = decoder.flush()   # a pending event at end of stream

Any split of the byte stream into chunks yields the same objects.

Speed. Command output is hundreds of thousands of `{"type":"stdout","text":"…","timestamp":…}` events.
`feed_items` cuts a chunk's run of such frames (in that exact compact shape, bare or `data:`-framed)
out in one pass and returns it as an `OutputRun` of parallel lists, without building a dict per
event; everything else goes through the general path (a whole chunk of bare JSON in one `json.loads`,
SSE line by line). The cut is made by `osbox._speedups.output_run` (C, built at install time) or, where
that could not be built, by `_output_run_py` (a regular expression), which keep to one contract.
Either only takes frames that the general path, in the state it is in, would decode to exactly the
same objects: escapes are resolved as `json` resolves them (by `json` itself in the Python cutter,
which the C one is held to), and anything else (a frame of another
shape, bytes that are not UTF-8, a pending SSE field) is left to the general path. Tests compare both
cutters with the general path over arbitrary texts, framings and chunk splits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["MAX_LINE_BYTES", "EventDecoder", "Item", "OutputRun", "StreamDecodeError"]

#: A longer line without a newline is an error rather than unbounded memory growth.
MAX_LINE_BYTES = 64 * 1024 * 1024

#: Where a run of output frames can start (bare, or after `data: `).
_HINT: Final = b'{"type":"std'
_SSE_PREFIX: Final = b"data: "

# The pure-Python cutter: one output frame in the exact compact shape execd and `osbox serve` write,
# as `osbox._speedups` takes it. The text is every byte up to the next quote no backslash escapes
# (an escape is a backslash and any byte but a newline); the json check of escaped texts refuses
# what JSON does. At most 18 digits: what the C cutter parses into an int64.
_TEXT = rb'((?:[^"\\]++|\\.)*+)'
_FRAME = rb'\{"type":"(stdout|stderr)","text":"' + _TEXT + rb'","timestamp":(-?(?:0|[1-9][0-9]{0,17}))\}\n'
_BARE_FRAME: Final = re.compile(_FRAME + rb"\n*+")
_SSE_FRAME: Final = re.compile(_SSE_PREFIX + _FRAME + rb"\n++")  # dispatched by a blank line
_BARE_RUN: Final = re.compile(rb"(?:" + _FRAME + rb"\n*+)++")
_SSE_RUN: Final = re.compile(rb"(?:" + _SSE_PREFIX + _FRAME + rb"\n++)++")
_KINDS: Final = {b"stdout": "stdout", b"stderr": "stderr"}
_CONTROL: Final = bytes(range(0x20))  # raw in a JSON string: invalid

#: `output_run(data, pos, sse) -> (end, kinds, texts, timestamps, escaped)`; see `_output_run_py`.
OutputCutter = Callable[[bytes, int, bool], tuple[int, list[str], list[str], list[int], bool]]


class StreamDecodeError(ValueError):
    """The bytes are not a valid event stream (bad JSON, or a line over `MAX_LINE_BYTES`)."""


class OutputRun:
    """Consecutive `stdout`/`stderr` events cut out of a chunk without JSON decoding.

    Event i is `{"type": kinds[i], "text": texts[i], "timestamp": timestamps[i]}`: exactly the object
    the general path decodes from its frame (`objects()` builds those dicts). `newline_free` says that
    no text holds a newline (none had an escape, and a raw newline cannot stand in a JSON string).
    """

    __slots__ = ("kinds", "newline_free", "texts", "timestamps")

    def __init__(
        self, kinds: list[str], texts: list[str], timestamps: list[int], *, newline_free: bool = False
    ) -> None:
        self.kinds = kinds
        self.texts = texts
        self.timestamps = timestamps
        self.newline_free = newline_free

    def objects(self) -> list[dict[str, Any]]:
        """The events as the dicts the general path would have decoded."""
        return list(map(_output_object, self.kinds, self.texts, self.timestamps))

    def __len__(self) -> int:
        return len(self.kinds)

    def __repr__(self) -> str:
        return f"OutputRun({len(self)} events)"


def _output_object(kind: str, text: str, timestamp: int) -> dict[str, Any]:
    return {"type": kind, "text": text, "timestamp": timestamp}


#: What `feed_items` returns: decoded objects, and runs of output events.
Item = dict[str, Any] | OutputRun


class EventDecoder:
    """Incremental decoder of an event stream into JSON objects (dicts)."""

    __slots__ = ("_buffer", "_cut", "_data", "_event", "_held", "_raw")

    def __init__(self, *, fast: bool = True, cutter: OutputCutter | None = None) -> None:
        """`fast=False` turns the output-run fast path off; `cutter` picks who cuts the runs (tests)."""
        self._buffer = b""  # the start of a line whose end has not come yet
        self._held: list[bytes] = []  # more of it: chunks without a newline, joined once one comes
        self._data: list[bytes] = []  # pending SSE `data:` lines
        self._raw: list[bytes] = []  # pending lines of a JSON object spread over several lines
        self._event: str | None = None
        self._cut = (cutter or output_run) if fast else None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """Decode as much of `chunk` (plus what was buffered) as forms whole lines."""
        items = self.feed_items(chunk)
        if not any(type(item) is OutputRun for item in items):
            return items  # type: ignore[return-value]
        out: list[dict[str, Any]] = []
        for item in items:
            if type(item) is OutputRun:
                out += item.objects()
            else:
                out.append(item)  # type: ignore[arg-type]
        return out

    def feed_items(self, chunk: bytes) -> list[Item]:
        """Like `feed`, but runs of compact stdout/stderr events come back as `OutputRun`s."""
        end = chunk.rfind(b"\n") + 1
        if not end:  # no line ends here: kept as it is (a long frame comes in many chunks, copied once)
            self._held.append(chunk)
            if len(self._buffer) + sum(map(len, self._held)) > MAX_LINE_BYTES:
                raise StreamDecodeError(f"stream line longer than {MAX_LINE_BYTES} bytes")
            return []
        # Cut the chunk before joining what was held to it: slicing the joined block would copy a
        # whole frame (a megabyte) a second time.
        head, tail = (chunk[:end], chunk[end:]) if end < len(chunk) else (chunk, b"")
        if self._buffer or self._held:
            block = b"".join([self._buffer, *self._held, head])
            self._held = []
        else:
            block = head
        self._buffer = tail
        if len(self._buffer) > MAX_LINE_BYTES:
            raise StreamDecodeError(f"stream line longer than {MAX_LINE_BYTES} bytes")
        out: list[Item] = []
        if block and not (self._cut and self._output_run(self._cut, block, out)):
            self._lines(block, out)
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of stream: decode a last line without newline and a pending event."""
        out: list[Item] = []
        if self._held:
            self._buffer = b"".join([self._buffer, *self._held])
            self._held = []
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._line(line, out)
        self._dispatch(out)
        return out  # type: ignore[return-value]  # the general path yields dicts only

    # -- the fast path --

    def _output_run(self, cut: OutputCutter, block: bytes, out: list[Item]) -> bool:
        """Decode a block of whole lines whose middle is a run of output frames; False: not done.

        Nothing is decoded nor any state changed before the block is known to qualify: a run of
        frames, with at most general lines before it (after which no SSE field may be pending) and
        after it.
        """
        start = block.find(_HINT)
        if start < 0:
            return False
        sse = block[max(start - len(_SSE_PREFIX), 0) : start] == _SSE_PREFIX
        first = start - len(_SSE_PREFIX) if sse else start
        if first and block[first - 1] != 0x0A:  # "\n": frames start at a line start
            return False
        end, kinds, texts, timestamps, escaped = cut(block, first, sse)
        if not kinds:
            return False
        pending = self._data or self._raw or self._event
        if first:
            self._lines(block[:first], out)
            if self._data or self._raw or self._event:
                # A pending SSE field changes what the frames mean: the general path takes the rest.
                self._lines(block[first:], out)
                return True
        elif pending:
            return False
        out.append(OutputRun(kinds, texts, timestamps, newline_free=not escaped))
        if end < len(block):
            self._lines(block[end:], out)
        return True

    # -- the general path --

    def _lines(self, block: bytes, out: list[Item]) -> None:
        """Decode whole lines (`block` ends with a newline)."""
        lines = block.split(b"\n")
        lines.pop()  # the empty piece after the last newline
        if not (self._data or self._raw or self._event):
            batch = self._batch(lines)
            if batch is not None:
                out += batch
                return
        for line in lines:
            self._line(line, out)

    @staticmethod
    def _batch(lines: list[bytes]) -> list[dict[str, Any]] | None:
        """Fast path for bare JSON and NDJSON: decode every line of a chunk in one `json.loads`.

        Returns None when the lines are anything else (SSE fields, an object spread over lines),
        and the line-by-line path decides.
        """
        body = list(filter(None, lines))  # drops the blank separator lines (C speed)
        if b"\r" in body:  # CRLF framing: its blank lines are b"\r"
            body = [line for line in body if line != b"\r"]
        if not body:
            return []
        if body[0][:1] != b"{":
            return None
        try:
            objects = json.loads(b"[" + b",".join(body) + b"]")
        except ValueError:
            return None
        if len(objects) != len(body) or set(map(type, objects)) != {dict}:
            return None
        return objects  # type: ignore[no-any-return]

    def _line(self, line: bytes, out: list[Item]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch(out)
            return
        first = line[0]
        if first == 0x7B and not self._data and not self._raw:  # "{": a bare JSON object or NDJSON line
            try:
                obj = json.loads(line)
            except ValueError:
                self._raw.append(line)  # a JSON object spread over several lines
                return
            out.append(self._checked(obj))
            return
        if self._raw:
            self._raw.append(line)
            return
        if first == 0x3A:  # ":" comment
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        # `id:` (osbox never resumes a stream), `retry:` and unknown fields are ignored, as SSE says.

    def _dispatch(self, out: list[Item]) -> None:
        if self._raw:
            raw, self._raw = b"\n".join(self._raw), []
            out.append(self._checked(self._loads(raw)))
        if self._data:
            data, self._data = b"\n".join(self._data), []
            obj = self._checked(self._loads(data))
            if self._event and self._event != "message" and "type" not in obj:
                obj["type"] = self._event
            out.append(obj)
        self._event = None

    @staticmethod
    def _loads(data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            shown = data[:200].decode("utf-8", errors="replace")
            raise StreamDecodeError(f"stream event is not valid JSON: {shown!r}") from exc

    @staticmethod
    def _checked(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise StreamDecodeError(f"stream event is not a JSON object: {obj!r:.200}")
        return obj


def _json_texts(raw: list[str]) -> list[str] | None:
    """The texts with their backslash escapes resolved; None if one is not a valid JSON string.

    Each text that holds a backslash is decoded as the JSON string it is, which is what `json.loads`
    of its whole frame does with it (and fails where that fails).
    """
    try:
        return [json.loads(f'"{text}"') if "\\" in text else text for text in raw]
    except ValueError:
        return None


def _output_run_py(data: bytes, pos: int, sse: bool) -> tuple[int, list[str], list[str], list[int], bool]:
    """Cut the run of compact output frames that starts at line start `pos` of `data`.

    Returns `(end, kinds, texts, timestamps, escaped)`: `end` is where the run stops (`pos` if no frame
    is there); `texts` are decoded as UTF-8 with surrogatepass (what `json.loads` does with bytes) and
    their escapes resolved as `json.loads` resolves them; `escaped` says whether any had an escape (so
    may hold a newline). A text that does not decode, holds a raw control character or an escape JSON
    refuses spoils the run: there is none. A bare frame takes the
    blank lines after it; an SSE frame needs one, the blank line that dispatches it. The C cutter in
    `osbox._speedups` keeps to the same contract.
    """
    frame = _SSE_FRAME if sse else _BARE_FRAME
    pieces = frame.split(data[pos:])
    # [before, kind, text, stamp, between, kind, text, stamp, ..., after]
    nothing: tuple[int, list[str], list[str], list[int], bool] = (pos, [], [], [], False)
    if len(pieces) == 1 or pieces[0]:
        return nothing
    if any(pieces[4:-1:4]):  # something between two frames: the run ends before it
        end = (_SSE_RUN if sse else _BARE_RUN).match(data, pos).end()  # type: ignore[union-attr]
        pieces = frame.split(data[pos:end])
    else:
        end = len(data) - len(pieces[-1])
    raw = pieces[2::4]
    joined = b"".join(raw)
    if len(joined.translate(None, _CONTROL)) != len(joined):
        return nothing
    try:
        texts = b"\n".join(raw).decode("utf-8", "surrogatepass").split("\n")  # no text holds a newline
    except UnicodeDecodeError:
        return nothing
    escaped = b"\\" in joined
    if escaped:
        resolved = _json_texts(texts)
        if resolved is None:
            return nothing
        texts = resolved
    kinds = list(map(_KINDS.__getitem__, pieces[1::4]))
    return end, kinds, texts, list(map(int, pieces[3::4])), escaped


output_run: OutputCutter
try:
    from ._speedups import output_run
except ImportError:  # installed where no C compiler was at hand
    output_run = _output_run_py
