"""The PTY WebSocket protocol of execd, both sides of it, without I/O (server and SDK share it).

`GET /pty/{id}/ws` carries binary frames whose first byte is a channel, and JSON text frames for
control (wire-behaviour §1.11, the reference execd's `pty_ws.go`):

    client → server   b"\\x00" + bytes                     keystrokes / stdin
                      {"type": "resize", "cols": C, "rows": R}
                      {"type": "signal", "signal": "SIGINT"}
                      {"type": "ping"}                      → {"type": "pong"}
                      {"type": "stdin", "data": "text"}     (a debugging fallback)
    server → client   b"\\x01" + bytes / b"\\x02" + bytes   output (stderr only in pipe mode)
                      b"\\x03" + offset (8 bytes, big-endian) + bytes   replay of what was missed
                      {"type": "connected", "session_id", "mode": "pty"|"pipe", "offset"}
                      {"type": "exit", "exit_code": N}      then a normal close
                      {"type": "error", "error", "code"}

Every byte of output has an offset in the session's output (a counter from 0, stdout and stderr
together): a client that remembers the offset after the last byte it saw reconnects with
`?since=offset` and is sent exactly what it missed (as far as the server's 1 MiB replay reaches).
`offset` in `connected` is osbox's addition (the reference ignores unknown fields): where the live
output that follows starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

import httpx2

from ._exceptions import APIConnectionError, APIError, PtyError, make_status_error
from .models._base import SnakeCaseWireModel

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncWebSocket
    from websockets.sync.client import ClientConnection as WebSocket

__all__ = [
    "PTY_CLOSE_TAKEN_OVER",
    "PtyExit",
    "PtyOutput",
    "PtySessionStatus",
    "PtyStream",
    "pty_ws_url",
]

STDIN, STDOUT, STDERR, REPLAY = 0, 1, 2, 3
Channel = Literal["stdout", "stderr", "replay"]
CHANNELS: dict[int, Channel] = {STDOUT: "stdout", STDERR: "stderr", REPLAY: "replay"}
#: The WebSocket close code of a holder whose session another client took over (`?takeover=1`).
PTY_CLOSE_TAKEN_OVER = 4001
TAKEN_OVER = "TAKEN_OVER"
ALREADY_CONNECTED = "ALREADY_CONNECTED"
INVALID_FRAME = "INVALID_FRAME"
START_FAILED = "START_FAILED"
STDIN_WRITE_FAILED = "STDIN_WRITE_FAILED"
#: The error code of input, a resize or a signal sent on a read-only viewer's connection.
READ_ONLY = "READ_ONLY"
_OFFSET_BYTES = 8


@dataclass(frozen=True)
class PtyOutput:
    """Bytes a PTY session wrote: `channel` "stdout" (all of a terminal's output), "stderr" (pipe
    mode only) or "replay" (output sent before this connection, on reconnect); `offset` is that of
    its first byte in the session's output."""

    data: bytes
    channel: Literal["stdout", "stderr", "replay"]
    offset: int


@dataclass(frozen=True)
class PtyExit:
    """The session's process ended: its exit status as a shell reports it (128 + N for signal N)."""

    exit_code: int


class PtySessionStatus(SnakeCaseWireModel):
    """`GET /pty/{id}`: whether its process runs, and how much it has written (`output_offset`).

    `mode` ("pty" or "pipe"), `exit_code`, `command` (None: an interactive shell), `connected` (a
    client holds it) and `viewers` (read-only ones) are osbox's additions (None, False and 0 from the
    reference execd)."""

    session_id: str
    running: bool = False
    output_offset: int = 0
    launch_attempted: bool = False
    launch_failed: bool = False
    mode: str | None = None
    exit_code: int | None = None
    command: str | None = None
    connected: bool = False
    viewers: int = 0


class CreatePtyResponse(SnakeCaseWireModel):
    """Answer of `POST /pty`."""

    session_id: str


def check_size(cols: int, rows: int) -> None:
    """A terminal size the server accepts, else ValueError before anything is sent."""
    for name, value in (("cols", cols), ("rows", rows)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 65535:
            raise ValueError(f"{name} must be an integer from 1 to 65535, not {value!r}")


def read_only_error() -> PtyError:
    """The PtyError for input on a read-only viewer's connection (raised before anything is sent)."""
    return PtyError(
        "this PTY connection is read-only (readonly=True): it cannot type, resize or signal; "
        "connect without readonly (takeover=True takes the session from its holder) to do so",
        code=READ_ONLY,
    )


def as_bytes(data: bytes | str) -> bytes:
    """Keystrokes: text is sent as UTF-8."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"send_input takes bytes or str, not {type(data).__name__}")


def connect_error(exc: Exception, url: str) -> APIError:
    """The osbox exception for a WebSocket that could not be opened: a refused upgrade is the same
    `APIStatusError` as the HTTP answer would raise (404 unknown session, 409 already held)."""
    from websockets.exceptions import InvalidStatus

    http_url = url.replace("ws", "http", 1).split("?")[0]
    request = httpx2.Request("GET", http_url)
    if isinstance(exc, InvalidStatus):
        answer = exc.response
        response = httpx2.Response(
            answer.status_code,
            headers=list(answer.headers.raw_items()),
            content=bytes(answer.body),
            request=request,
        )
        return make_status_error(response)
    return APIConnectionError(
        f"could not open the PTY WebSocket {http_url}: {type(exc).__name__}: {exc}", request=request
    )


def closed_error(code: int | None, reason: str) -> PtyError:
    """The PtyError for a socket closed before the session's exit frame."""
    if code == PTY_CLOSE_TAKEN_OVER:
        return PtyError(
            "another client took this PTY session over (takeover=True); this connection is closed",
            code=TAKEN_OVER,
        )
    detail = f" ({code} {reason})" if code else ""
    return PtyError(
        f"the PTY connection dropped before the session ended{detail}; reconnect() to resume where it "
        "stopped (the output missed is replayed)",
        code="DISCONNECTED",
    )


def frame_error(frame: dict[str, object]) -> PtyError:
    """The PtyError for an `error` frame."""
    code = str(frame.get("code") or "ERROR")
    return PtyError(f"the PTY session reported {code}: {frame.get('error') or 'no details'}", code=code)


def _recv_within(ws: WebSocket, seconds: float | None) -> str | bytes:
    """The next message; TimeoutError after `seconds` (None: no limit)."""
    return ws.recv(timeout=seconds)


async def _arecv_within(ws: AsyncWebSocket, seconds: float | None) -> str | bytes:
    """The next message; TimeoutError after `seconds` (None: no limit)."""
    if seconds is None:
        return await ws.recv()
    import asyncio  # only here: the sync client should not pay for importing it

    return await asyncio.wait_for(ws.recv(), seconds)


def pty_ws_url(
    base_url: str, session_id: str, *, since: int | None, takeover: bool, pipe: bool, readonly: bool = False
) -> str:
    """The WebSocket URL of a session, from execd's HTTP base URL (a path prefix is kept)."""
    scheme, _, rest = base_url.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    query = {}
    if since is not None:
        query["since"] = str(since)
    if takeover:
        query["takeover"] = "1"
    if pipe:
        query["pty"] = "0"
    if readonly:
        query["readonly"] = "1"
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{ws_scheme}://{rest.rstrip('/')}/pty/{session_id}/ws{suffix}"


def stdin_frame(data: bytes) -> bytes:
    """A binary frame carrying keystrokes."""
    return bytes((STDIN,)) + data


def output_frame(channel: int, data: bytes) -> bytes:
    """A binary frame carrying output on `channel` (STDOUT or STDERR)."""
    return bytes((channel,)) + data


def replay_frame(offset: int, data: bytes) -> bytes:
    """A binary replay frame: output from `offset` on, sent before the live output."""
    return bytes((REPLAY,)) + offset.to_bytes(_OFFSET_BYTES, "big") + data


def control(kind: str, **fields: object) -> str:
    """A JSON control frame."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


class PtyStream:
    """Turns the server's frames into `PtyOutput` / `PtyExit` and keeps the output offset.

    `offset` is where the next output byte would start: the value to reconnect with (`since=`).
    Control frames other than `exit` are kept in `last_control` (`connected`, `pong`); an `error`
    frame is returned as a `PtyError`-shaped dict for the caller to raise.
    """

    def __init__(self, since: int | None = None) -> None:
        self.offset = since or 0
        self.mode: str | None = None
        self.exit_code: int | None = None
        self.pongs = 0

    def feed(self, message: bytes | str) -> PtyOutput | PtyExit | dict[str, object] | None:
        """One frame in; what it means out (None for a frame of no interest to the reader)."""
        if isinstance(message, bytes):
            if not message:
                return None
            channel = message[0]
            if channel == REPLAY:
                start = int.from_bytes(message[1 : 1 + _OFFSET_BYTES], "big")
                data = message[1 + _OFFSET_BYTES :]
                self.offset = start + len(data)
                return PtyOutput(data, "replay", start)
            name = CHANNELS.get(channel)
            if name is None:
                return None
            start = self.offset
            self.offset += len(message) - 1
            return PtyOutput(message[1:], name, start)
        try:
            frame = json.loads(message)
        except ValueError:
            return None
        if not isinstance(frame, dict):
            return None
        kind = frame.get("type")
        if kind == "exit":
            code = frame.get("exit_code")
            self.exit_code = code if isinstance(code, int) else -1
            return PtyExit(self.exit_code)
        if kind == "connected":
            self.mode = str(frame.get("mode") or "pty")
            offset = frame.get("offset")
            if isinstance(offset, int) and offset >= 0:
                self.offset = offset
            return None
        if kind == "pong":
            self.pongs += 1
            return None
        if kind == "error":
            return frame
        return None
