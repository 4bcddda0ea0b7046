"""PTY sessions on execd, low level: `create_pty`, `get_pty`, `delete_pty`, `connect_pty` (the WebSocket).

    session_id = await execd.create_pty()
    async with await execd.connect_pty(session_id) as conn:
        await conn.resize(120, 40)
        await conn.send_input("echo hi\\n")
        async for output in conn:           # PtyOutput(data, channel, offset) until the shell exits
            print(output.data)
        print(conn.exit_code)

The frames are the reference execd's (`osbox._pty`). The WebSocket client is `websockets` (its
asyncio and sync clients have the same shape, so the twins stay one source). The high-level form,
with reconnects and callbacks, is `sandbox.pty` (`sandbox_pty.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    _arecv_within,
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
from .client import AsyncAPIClient

# websockets (and asyncio, for the sync twin) load when a PTY is first used, not with the execd client.
if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection
    from websockets.exceptions import ConnectionClosed

__all__ = ["AsyncPtyConnection", "AsyncPtyOperations"]

#: How long opening the WebSocket may take.
CONNECT_TIMEOUT = 30.0


class AsyncPtyConnection:
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

    async def send_input(self, data: bytes | str) -> None:
        """Send keystrokes (text as UTF-8): `"ls\\n"`, `"\\x03"` for Ctrl-C, `"\\x04"` for Ctrl-D."""
        await self._send(stdin_frame(as_bytes(data)))

    async def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (ignored in pipe mode)."""
        check_size(cols, rows)
        await self._send(control("resize", cols=cols, rows=rows))

    async def signal(self, name: str) -> None:
        """Send a signal by name (`"SIGINT"`, `"SIGTERM"`, ...) to the shell's process group."""
        await self._send(control("signal", signal=name))

    async def ping(self) -> None:
        """Ask for a `pong` (counted in `pongs`)."""
        await self._send(control("ping"))

    async def _send(self, message: bytes | str) -> None:
        from websockets.exceptions import ConnectionClosed

        if self.readonly and message != control("ping"):
            raise read_only_error()
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self, timeout: float | None = None) -> PtyOutput | PtyExit | None:
        """The next output or the exit; None once the socket closed after the exit. Raises
        `PtyError` when it closes before (taken over, dropped) and TimeoutError after `timeout` s."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = await _arecv_within(self._ws, timeout)
            except ConnectionClosed as exc:
                if self._stream.exit_code is not None:
                    return None
                raise _closed(exc) from None
            event = self._stream.feed(message)
            if isinstance(event, dict):
                raise frame_error(event)
            if event is not None:
                return event

    def __aiter__(self) -> AsyncIterator[PtyOutput]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[PtyOutput]:
        while True:
            event = await self.recv()
            if not isinstance(event, PtyOutput):
                return
            yield event

    async def aclose(self) -> None:
        """Close the socket; the session goes on (reconnect later, or delete it)."""
        await self._ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _closed(exc: ConnectionClosed) -> PtyError:
    return closed_error(exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else closed_error(None, "")


class AsyncPtyOperations(AsyncAPIClient):
    """The PTY operations of `AsyncExecdClient`."""

    async def create_pty(
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
        created = await self._call(APIRequest("POST", "/pty", json=body, parse=model(CreatePtyResponse)))
        return created.session_id

    async def list_pty(self) -> list[PtySessionStatus]:
        """The sandbox's PTY sessions, oldest first (`GET /pty`, osbox's: other servers answer 404 or
        405), e.g. to find the one to watch with `connect_pty(id, readonly=True)`.

            running = [s.session_id for s in execd.list_pty() if s.running]
        """
        return await self._call(APIRequest("GET", "/pty", parse=adapter(list[PtySessionStatus])))

    async def get_pty(self, session_id: str) -> PtySessionStatus:
        """A session's state (`GET /pty/{id}`); `NotFoundError` if there is none."""
        return await self._call(
            APIRequest("GET", path("/pty/{id}", id=session_id), parse=model(PtySessionStatus))
        )

    async def delete_pty(self, session_id: str) -> None:
        """Kill a session's processes and forget it (`DELETE /pty/{id}`)."""
        await self._call(APIRequest("DELETE", path("/pty/{id}", id=session_id), parse=no_content))

    async def connect_pty(
        self,
        session_id: str,
        *,
        since: int | None = None,
        takeover: bool = False,
        pipe: bool = False,
        readonly: bool = False,
    ) -> AsyncPtyConnection:
        """Open the session's WebSocket (`/pty/{id}/ws`); the first connection starts its shell.

        `since`: the output offset to resume from (what was missed comes first, as a replay); without
        it the server sends everything it kept. `takeover`: take the session from the client holding it
        (else that is a `ConflictError`). `pipe`: start the shell on pipes instead of a terminal.
        `readonly` (osbox's): watch beside whoever holds it, output only (a viewer never holds it).
        """
        if readonly and takeover:
            raise ValueError("a readonly connection cannot take the session over: pass one or the other")
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI

        session = path("{id}", id=session_id)
        url = pty_ws_url(self.base_url, session, since=since, takeover=takeover, pipe=pipe, readonly=readonly)
        headers = [(name, value) for name, value in self._headers.items() if name.lower() != "accept"]
        try:
            # Entered as a context manager (closed by `aclose`): how websockets' sync client wants it too.
            ws = await connect(
                url,
                additional_headers=headers,
                compression=None,  # keystrokes are tiny: deflate only adds latency
                max_size=None,
                open_timeout=CONNECT_TIMEOUT,
                user_agent_header=None,  # the client's own User-Agent is among `headers`
            ).__aenter__()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise connect_error(exc, url) from None
        return AsyncPtyConnection(ws, session_id, since, readonly=readonly)
