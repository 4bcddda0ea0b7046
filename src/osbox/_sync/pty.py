# Generated from src/osbox/_async/pty.py by scripts/unasync.py: do not edit.
"""PTY sessions on execd, low level: `create_pty`, `get_pty`, `delete_pty`, `connect_pty` (the WebSocket).

    session_id = execd.create_pty()
    with execd.connect_pty(session_id) as conn:
        conn.resize(120, 40)
        conn.send_input("echo hi\\n")
        for output in conn:           # PtyOutput(data, channel, offset) until the shell exits
            print(output.data)
        print(conn.exit_code)

The frames are the reference execd's (`osbox._pty`). The WebSocket client is `websockets` (its
asyncio and sync clients have the same shape, so the twins stay one source). The high-level form,
with reconnects and callbacks, is `sandbox.pty` (`sandbox_pty.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .._exceptions import PtyError
from .._operation import APIRequest, adapter, given, model, no_content, path
from .._pty import (
    CreatePtyResponse,
    PtyExit,
    PtyOutput,
    PtySessionStatus,
    PtyStream,
    _recv_within,
    as_bytes,
    check_size,
    closed_error,
    connect_error,
    control,
    frame_error,
    pty_ws_url,
    read_only_error,
    stdin_frame,
)
from .client import SyncAPIClient

# websockets (and asyncio, for the sync twin) load when a PTY is first used, not with the execd client.
if TYPE_CHECKING:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import ClientConnection

__all__ = ["PtyConnection", "PtyOperations"]

#: How long opening the WebSocket may take.
CONNECT_TIMEOUT = 30.0


class PtyConnection:
    """One client's WebSocket to a PTY session: keystrokes and control in, output out.

    `offset` is where the next output byte starts in the session's output: reconnect with
    `since=offset` to get exactly what was missed. `exit_code` is set once the exit frame came.
    A `readonly` connection (a viewer) only reads: sending input, a resize or a signal raises
    `PtyError` with `code == "READ_ONLY"`.
    """

    def __init__(
        self, ws: ClientConnection, session_id: str, since: int | None, *, readonly: bool = False
    ) -> None:
        self._ws = ws
        self.session_id = session_id
        self.readonly = readonly
        self._stream = PtyStream(since)

    @property
    def offset(self) -> int:
        return self._stream.offset

    @property
    def mode(self) -> str | None:
        """ "pty" or "pipe", once the server said so."""
        return self._stream.mode

    @property
    def exit_code(self) -> int | None:
        return self._stream.exit_code

    def send_input(self, data: bytes | str) -> None:
        """Send keystrokes (text as UTF-8): `"ls\\n"`, `"\\x03"` for Ctrl-C, `"\\x04"` for Ctrl-D."""
        self._send(stdin_frame(as_bytes(data)))

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (ignored in pipe mode)."""
        check_size(cols, rows)
        self._send(control("resize", cols=cols, rows=rows))

    def signal(self, name: str) -> None:
        """Send a signal by name (`"SIGINT"`, `"SIGTERM"`, ...) to the shell's process group."""
        self._send(control("signal", signal=name))

    def ping(self) -> None:
        """Ask for a `pong` (counted in `pongs`)."""
        self._send(control("ping"))

    def _send(self, message: bytes | str) -> None:
        from websockets.exceptions import ConnectionClosed

        if self.readonly and message != control("ping"):
            raise read_only_error()
        try:
            self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    def recv(self, timeout: float | None = None) -> PtyOutput | PtyExit | None:
        """The next output or the exit; None once the socket closed after the exit. Raises
        `PtyError` when it closes before (taken over, dropped) and TimeoutError after `timeout` s."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = _recv_within(self._ws, timeout)
            except ConnectionClosed as exc:
                if self._stream.exit_code is not None:
                    return None
                raise _closed(exc) from None
            event = self._stream.feed(message)
            if isinstance(event, dict):
                raise frame_error(event)
            if event is not None:
                return event

    def __iter__(self) -> Iterator[PtyOutput]:
        return self._outputs()

    def _outputs(self) -> Iterator[PtyOutput]:
        while True:
            event = self.recv()
            if not isinstance(event, PtyOutput):
                return
            yield event

    def close(self) -> None:
        """Close the socket; the session goes on (reconnect later, or delete it)."""
        self._ws.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _closed(exc: ConnectionClosed) -> PtyError:
    return closed_error(exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else closed_error(None, "")


class PtyOperations(SyncAPIClient):
    """The PTY operations of `ExecdClient`."""

    def create_pty(
        self,
        *,
        cwd: str | None = None,
        command: str | None = None,
        cols: int | None = None,
        rows: int | None = None,
    ) -> str:
        """Create a PTY session (`POST /pty`); its shell starts when a client connects. `command`
        runs instead of an interactive shell (`bash -c command`); `cwd` is created if missing.
        `cols` x `rows` is the terminal's size from the start (osbox's; the reference ignores them
        and starts at 80 x 24: resize once connected). Returns the session id.

            session_id = execd.create_pty(cwd="/workspace", cols=120, rows=40)
        """
        if cols is not None or rows is not None:
            check_size(80 if cols is None else cols, 24 if rows is None else rows)
        body = given(cwd=cwd, command=command, cols=cols, rows=rows)
        created = self._call(APIRequest("POST", "/pty", json=body, parse=model(CreatePtyResponse)))
        return created.session_id

    def list_pty(self) -> list[PtySessionStatus]:
        """The sandbox's PTY sessions, oldest first (`GET /pty`, osbox's: other servers answer 404 or
        405), e.g. to find the one to watch with `connect_pty(id, readonly=True)`.

            running = [s.session_id for s in execd.list_pty() if s.running]
        """
        return self._call(APIRequest("GET", "/pty", parse=adapter(list[PtySessionStatus])))

    def get_pty(self, session_id: str) -> PtySessionStatus:
        """A session's state (`GET /pty/{id}`); `NotFoundError` if there is none."""
        return self._call(APIRequest("GET", path("/pty/{id}", id=session_id), parse=model(PtySessionStatus)))

    def delete_pty(self, session_id: str) -> None:
        """Kill a session's processes and forget it (`DELETE /pty/{id}`)."""
        self._call(APIRequest("DELETE", path("/pty/{id}", id=session_id), parse=no_content))

    def connect_pty(
        self,
        session_id: str,
        *,
        since: int | None = None,
        takeover: bool = False,
        pipe: bool = False,
        readonly: bool = False,
    ) -> PtyConnection:
        """Open the session's WebSocket (`/pty/{id}/ws`); the first connection starts its shell.

        `since`: the output offset to resume from (what was missed comes first, as a replay); without
        it the server sends everything it kept. `takeover`: take the session from the client holding it
        (else that is a `ConflictError`). `pipe`: start the shell on pipes instead of a terminal.
        `readonly` (osbox's): watch beside whoever holds it, output only (a viewer never holds it).
        """
        if readonly and takeover:
            raise ValueError("a readonly connection cannot take the session over: pass one or the other")
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        session = path("{id}", id=session_id)
        url = pty_ws_url(self.base_url, session, since=since, takeover=takeover, pipe=pipe, readonly=readonly)
        headers = [(name, value) for name, value in self._headers.items() if name.lower() != "accept"]
        try:
            # Entered as a context manager (closed by `close`): how websockets' sync client wants it too.
            ws = connect(
                url,
                additional_headers=headers,
                compression=None,  # keystrokes are tiny: deflate only adds latency
                max_size=None,
                open_timeout=CONNECT_TIMEOUT,
                user_agent_header=None,  # the client's own User-Agent is among `headers`
            ).__enter__()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise connect_error(exc, url) from None
        return PtyConnection(ws, session_id, since, readonly=readonly)
