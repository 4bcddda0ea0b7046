"""The wire protocol between `osbox serve` and the agent inside each sandbox.

Stdlib only, shared by both sides: the agent imports it as a top-level module (`protocol`), the
server as `osbox.server._agent.protocol`.

One unix-socket connection carries one request. A message is one JSON object on one line
(UTF-8, `\\n`-terminated). File descriptors travel as SCM_RIGHTS ancillary data attached to the
first byte of the message they belong to; the message names how many it carries (`"nfds"`).

    request   {"op": "spawn", "argv": [...], ..., "nfds": 3}        + fds
    reply     {"ok": true, "result": {...}, "nfds": 1}               + fds
              {"ok": false, "error": {"kind": "os", "errno": 2, "strerror": "...", "filename": "/x"}}
    spawn then sends a second line when the child exits:  {"exit": 0}   (-N: killed by signal N)

Ops: `ping`, `start` (the entrypoint), `spawn`, `kill`, `connect`, `open`, `call`, and `watch`
(its replies stream on: see `watch.py`).
This module holds only framing (bytes <-> dicts) and the error mapping; no I/O.
"""

from __future__ import annotations

import errno as _errno

# Not `from typing import Any` at run time: the agent imports this module at every sandbox start,
# and typing pulls in re, enum and collections (~14 ms). Type checkers treat TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_FDS",
    "MAX_LINE",
    "AgentError",
    "LineBuffer",
    "encode",
    "error_reply",
    "exception_from_error",
    "ok_reply",
]

#: At most this many fds ride on one message.
MAX_FDS = 8
#: A message larger than this is refused (a directory listing of ~100k entries fits).
MAX_LINE = 64 * 1024 * 1024


class AgentError(Exception):
    """The agent failed in a way that is not an OSError from the operation itself."""


def _codec() -> tuple[Any, Any]:
    """(dumps, loads). The agent starts for every sandbox, and `import json` pulls in `re` and
    `enum` (~10 ms); the C accelerators `json` itself uses load in microseconds."""
    try:
        import _json as _json_module

        accelerators: Any = _json_module  # private C API of `json`, stable since 3.x; checked below

        class _Context:
            strict = False
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int

            @staticmethod
            def parse_constant(name: str) -> float:
                return float(name)

        def _unserializable(value: object) -> object:
            raise TypeError(f"{type(value).__name__} is not JSON serializable")

        scan = accelerators.make_scanner(_Context)
        encoder = accelerators.make_encoder(
            None, _unserializable, accelerators.encode_basestring, None, ":", ",", False, False, True
        )

        def dumps(value: Any) -> str:
            return "".join(encoder(value, 0))

        def loads(text: str) -> Any:
            text = text.strip()
            try:
                value, end = scan(text, 0)
            except StopIteration:
                raise ValueError("not JSON") from None
            if end != len(text):
                raise ValueError("extra data after JSON value")
            return value

        if loads(dumps({"a": [1, "\u00e9", None]})) == {"a": [1, "\u00e9", None]}:
            return dumps, loads
    except Exception:  # noqa: S110  (an interpreter without these internals: use the module)
        pass
    import json

    return (lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False)), json.loads


_dumps, _loads = _codec()


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line of UTF-8 JSON."""
    text: str = _dumps(message)
    return text.encode() + b"\n"


def ok_reply(result: Any = None, nfds: int = 0) -> dict[str, Any]:
    """A success reply carrying `result` (and announcing `nfds` descriptors)."""
    reply: dict[str, Any] = {"ok": True, "result": result}
    if nfds:
        reply["nfds"] = nfds
    return reply


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The reply describing `exc`: OSError and ValueError keep their kind, the rest is generic."""
    if isinstance(exc, OSError):
        filename = exc.filename if isinstance(exc.filename, str) else None
        code = exc.errno
        if code is None:  # e.g. a socket timeout
            code = _errno.ETIMEDOUT if isinstance(exc, TimeoutError) else _errno.EIO
        error: dict[str, Any] = {
            "kind": "os",
            "errno": code,
            "strerror": exc.strerror or str(exc),
            "filename": filename,
        }
    elif isinstance(exc, (ValueError, TypeError, KeyError)):
        # TypeError/KeyError: the op was called with wrong or missing arguments.
        error = {"kind": "value", "message": str(exc) or type(exc).__name__}
    else:
        error = {"kind": "agent", "message": f"{type(exc).__name__}: {exc}"}
    return {"ok": False, "error": error}


def exception_from_error(error: Any, os_error: type[OSError] = OSError) -> Exception:
    """The exception to raise on the server side for a reply's `error` object (an OS error from the
    operation as `os_error`: the server passes its backend's `SandboxOSError`)."""
    if not isinstance(error, dict):
        return AgentError(f"malformed error reply: {error!r}")
    kind = error.get("kind")
    if kind == "os":
        errno_value = error.get("errno")
        strerror = str(error.get("strerror") or "")
        filename = error.get("filename")
        if not isinstance(errno_value, int):
            return AgentError(strerror or "unknown OS error")
        if isinstance(filename, str):
            return os_error(errno_value, strerror, filename)
        return os_error(errno_value, strerror)
    if kind == "value":
        return ValueError(str(error.get("message") or "invalid argument"))
    return AgentError(str(error.get("message") or "agent error"))


class LineBuffer:
    """Splits a byte stream into JSON messages.

    Feed it what `recv` returned; `next_message()` yields complete messages in order, or None when
    it needs more bytes. Raises `AgentError` on oversized or malformed lines.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes already known to hold no newline (keeps big messages linear)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data
        if len(self._buffer) > MAX_LINE and self._buffer.find(b"\n", self._scanned) < 0:
            raise AgentError("message too large")

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, or None if no full line has arrived yet."""
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        try:
            message = _loads(line.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise AgentError(f"malformed message: {exc}") from None
        if not isinstance(message, dict):
            raise AgentError("malformed message: not an object")
        return message

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)
