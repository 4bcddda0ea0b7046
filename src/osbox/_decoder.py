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
out with one regular expression and returns it as an `OutputRun` of parallel lists, without building a
dict per event; everything else goes through the general path (a whole chunk of bare JSON in one
`json.loads`, SSE line by line). The fast path only takes frames that the general path, in the state it
is in, would decode to exactly the same objects; anything else (escapes it cannot resolve the same way,
bytes that are not UTF-8, a pending SSE field) sends the whole chunk down the general path. Tests
compare the two paths over arbitrary texts, framings and chunk splits (`EventDecoder(fast=False)`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["MAX_LINE_BYTES", "EventDecoder", "Item", "OutputRun", "StreamDecodeError"]

#: A longer line without a newline is an error rather than unbounded memory growth.
MAX_LINE_BYTES = 64 * 1024 * 1024

# One output event in the exact compact shape both execd and `osbox serve` write. The text may hold
# no quote (so the match cannot run past its end); backslashes and control characters are checked
# afterwards. A JSON number has no leading zeros. Frames start at a line start and take their blank
# lines with them; an SSE frame needs its dispatching blank line, a bare one (NDJSON) does not.
_OUTPUT = r'\{"type":"(stdout|stderr)","text":"([^"]*+)","timestamp":(-?(?:0|[1-9][0-9]*))\}\r?\n'
_BARE_FRAME: Final = re.compile("^" + _OUTPUT + r"(?:\r?\n)*+", re.MULTILINE)
_SSE_FRAME: Final = re.compile("^data: ?" + _OUTPUT + r"\r?\n(?:\r?\n)*+", re.MULTILINE)
_OUTPUT_HINT: Final = '{"type":"std'
_SSE_START: Final = re.compile(r"[\r\n]*data:")
#: Bytes a text must not hold to be its own JSON value: control characters (invalid) and backslashes.
_NOT_PLAIN: Final = bytes(range(0x20)) + b"\\"


class StreamDecodeError(ValueError):
    """The bytes are not a valid event stream (bad JSON, or a line over `MAX_LINE_BYTES`)."""


class OutputRun:
    """Consecutive `stdout`/`stderr` events cut out of a chunk without JSON decoding.

    Event i is `{"type": kinds[i], "text": texts[i], "timestamp": int(stamps[i])}`: exactly the object
    the general path decodes from its frame (`objects()` builds those dicts).
    """

    __slots__ = ("kinds", "stamps", "texts")

    def __init__(self, kinds: list[str], texts: list[str], stamps: list[str]) -> None:
        self.kinds = kinds
        self.texts = texts
        self.stamps = stamps

    def timestamps(self) -> list[int]:
        """The events' timestamps (Unix milliseconds)."""
        return list(map(int, self.stamps))

    def objects(self) -> list[dict[str, Any]]:
        """The events as the dicts the general path would have decoded."""
        return list(map(_output_object, self.kinds, self.texts, self.timestamps()))

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

    __slots__ = ("_buffer", "_data", "_event", "_fast", "_raw")

    def __init__(self, *, fast: bool = True) -> None:
        """`fast=False` turns the output-run fast path off (tests compare both paths)."""
        self._buffer = b""
        self._data: list[bytes] = []  # pending SSE `data:` lines
        self._raw: list[bytes] = []  # pending lines of a JSON object spread over several lines
        self._event: str | None = None
        self._fast = fast

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
        if self._buffer:
            chunk = self._buffer + chunk
        end = chunk.rfind(b"\n") + 1
        block, self._buffer = chunk[:end], chunk[end:]
        if len(self._buffer) > MAX_LINE_BYTES:
            raise StreamDecodeError(f"stream line longer than {MAX_LINE_BYTES} bytes")
        out: list[Item] = []
        if block and not (self._fast and self._output_run(block, out)):
            self._lines(block, out)
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of stream: decode a last line without newline and a pending event."""
        out: list[Item] = []
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._line(line, out)
        self._dispatch(out)
        return out  # type: ignore[return-value]  # the general path yields dicts only

    # -- the fast path --

    def _output_run(self, block: bytes, out: list[Item]) -> bool:
        """Decode a block of whole lines whose middle is a run of output frames; False: not done.

        Nothing is decoded nor any state changed before the block is known to qualify: a run of
        frames, with at most general lines before it (after which no SSE field may be pending) and
        after it.
        """
        try:
            text = block.decode("utf-8", "surrogatepass")  # what json.loads does with bytes
        except UnicodeDecodeError:
            return False
        if _OUTPUT_HINT not in text:
            return False
        # The framing of the first line picks the pattern (a block mixing framings goes the general way).
        pieces = (_SSE_FRAME if _SSE_START.match(text) else _BARE_FRAME).split(text)
        # [before, kind, text, stamp, between, kind, text, stamp, ..., after]
        if len(pieces) == 1 or any(pieces[4:-1:4]):
            return False
        texts = _json_texts(pieces[2::4])
        if texts is None:
            return False
        before, after = pieces[0], pieces[-1]
        if before:
            before_bytes = before.encode("utf-8", "surrogatepass")  # exactly the block's first bytes
            self._lines(before_bytes, out)
            if self._data or self._raw or self._event:
                # A pending SSE field changes what the frames mean: the general path takes the rest.
                self._lines(block[len(before_bytes) :], out)
                return True
        elif self._data or self._raw or self._event:
            return False
        out.append(OutputRun(pieces[1::4], texts, pieces[3::4]))
        if after:
            self._lines(after.encode("utf-8", "surrogatepass"), out)
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
    """The JSON string values of texts cut out between quotes; None if one is not a valid JSON string.

    Texts with no backslash and no control character (checked over all of them at C speed) are their
    own values. Otherwise each text that needs it is decoded as the JSON string it is, which is what
    `json.loads` of its whole frame does with it (and fails where that fails).
    """
    joined = "".join(raw).encode("utf-8", "surrogatepass")
    if len(joined.translate(None, _NOT_PLAIN)) == len(joined):
        return raw
    try:
        return [text if "\\" not in text and text.isprintable() else json.loads(f'"{text}"') for text in raw]
    except ValueError:
        return None
