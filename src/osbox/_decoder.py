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
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_LINE_BYTES", "EventDecoder", "StreamDecodeError"]

#: A longer line without a newline is an error rather than unbounded memory growth.
MAX_LINE_BYTES = 64 * 1024 * 1024


class StreamDecodeError(ValueError):
    """The bytes are not a valid event stream (bad JSON, or a line over `MAX_LINE_BYTES`)."""


class EventDecoder:
    """Incremental decoder of an event stream into JSON objects (dicts)."""

    __slots__ = ("_buffer", "_data", "_event", "_id", "_raw")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []  # pending SSE `data:` lines
        self._raw: list[bytes] = []  # pending lines of a JSON object spread over several lines
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """Decode as much of `chunk` (plus what was buffered) as forms whole lines."""
        if self._buffer:
            chunk = self._buffer + chunk
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            raise StreamDecodeError(f"stream line longer than {MAX_LINE_BYTES} bytes")
        if not (self._data or self._raw or self._event):
            batch = self._batch(lines)
            if batch is not None:
                return batch
        out: list[dict[str, Any]] = []
        for line in lines:
            self._line(line, out)
        return out

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

    def flush(self) -> list[dict[str, Any]]:
        """End of stream: decode a last line without newline and a pending event."""
        out: list[dict[str, Any]] = []
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._line(line, out)
        self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[dict[str, Any]]) -> None:
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
        elif name == b"id":
            self._id = value.decode("utf-8", errors="replace")
        # `retry:` and unknown fields are ignored, as the SSE specification says.

    def _dispatch(self, out: list[dict[str, Any]]) -> None:
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
