"""The server proxy: `/sandboxes/{id}/proxy/{port}[/{path}]`, unauthenticated by API key.

Port 44772 is execd: the `X-EXECD-ACCESS-TOKEN` header is checked in constant time and the
request is dispatched in-process to the execd ASGI app. Port 18080 is the sandbox's egress API,
in-process too (`egress.app`, which checks `OPENSANDBOX-EGRESS-AUTH` in constant time). Any other
port is relayed as HTTP/1.1 over `handle.connect(port)` with h11: method, query, headers and body
stream both ways; hop-by-hop and credential headers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from osbox._wire import EGRESS_PORT, EXECD_PORT, EXECD_TOKEN_HEADER

from ._backend.base import SandboxHandle
from .execd import ExecdService
from .lifecycle.errors import ApiError

__all__ = ["SandboxProxy"]

_log = logging.getLogger("osbox.server.proxy")
_TOKEN_HEADER = EXECD_TOKEN_HEADER.lower().encode()  # ASGI header names arrive lower-case

_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
_NEVER_FORWARDED = _HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"cookie",
    b"open-sandbox-api-key",
    b"content-length",
}
_CHUNK = 64 * 1024


def _request_headers(headers: list[tuple[bytes, bytes]], port: int) -> list[tuple[bytes, bytes]]:
    """Headers to send upstream, with the framing header h11 needs for the body."""
    named_by_connection = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in _NEVER_FORWARDED and name.lower() not in named_by_connection
    ]
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    framing = (
        [(b"content-length", lengths[0])]
        if lengths
        else [(b"transfer-encoding", b"chunked")]
        if chunked
        else []
    )
    return [(b"host", f"127.0.0.1:{port}".encode()), *kept, *framing]


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]


def _inner_scope(scope: Scope, rest: str) -> Scope:
    """The request as an in-process app behind the proxy sees it: its path is `/rest`."""
    path = "/" + rest
    return {**scope, "path": path, "raw_path": path.encode(), "root_path": "", "path_params": {}}


class SandboxProxy:
    """ASGI endpoint for the proxy routes (HTTP, and WebSocket for execd)."""

    def __init__(
        self,
        lookup: Callable[[str], SandboxHandle],
        token_of: Callable[[str], str],
        execd: Callable[[], ExecdService],
        egress: Callable[[str], ASGIApp] | None = None,
    ) -> None:
        """`egress` gives the egress API app of a sandbox (None: port 18080 answers 501)."""
        self._lookup = lookup
        self._token_of = token_of
        self._execd = execd  # resolved per request: the service starts with the server
        self._egress = egress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        sandbox_id, port, rest = str(params["sandbox_id"]), int(params["port"]), str(params.get("path", ""))
        if not 1 <= port <= 65535:
            raise ApiError(400, "SANDBOX::INVALID_PARAMETER", f"port {port} is not between 1 and 65535")
        if port == EXECD_PORT:
            await self._to_execd(sandbox_id, rest, scope, receive, send)
        elif port == EGRESS_PORT and scope["type"] == "http":
            if self._egress is None:
                raise ApiError(501, "NOT_SUPPORTED", "This server has no egress API")
            await self._egress(sandbox_id)(_inner_scope(scope, rest), receive, send)
        elif scope["type"] != "http":
            # A WebSocket to an arbitrary port: use the direct endpoint, which relays raw TCP.
            await send({"type": "websocket.close", "code": 1003, "reason": "use the direct endpoint"})
        else:
            await self._relay_http(self._lookup(sandbox_id), port, "/" + rest, scope, receive, send)

    async def _to_execd(self, sandbox_id: str, rest: str, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(_TOKEN_HEADER, b"")
        expected = self._token_of(sandbox_id).encode()
        if not hmac.compare_digest(given, expected):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
                return
            raise ApiError(401, "UNAUTHORIZED", f"invalid or missing header {EXECD_TOKEN_HEADER}")
        handle = self._lookup(sandbox_id)
        await self._execd().serve(handle, _inner_scope(scope, rest), receive, send)

    async def _relay_http(
        self, handle: SandboxHandle, port: int, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            reader, writer = await handle.open_connection(port)
        except Exception as exc:
            raise ApiError(
                502,
                "PROXY::UPSTREAM_UNAVAILABLE",
                f"Nothing accepts connections on port {port} in the sandbox",
            ) from exc
        query = scope.get("query_string", b"")
        target = path.encode() + (b"?" + query if query else b"")
        conn = h11.Connection(h11.CLIENT)
        headers = _request_headers(list(scope["headers"]), port)
        body_task: asyncio.Task[None] | None = None
        started = False
        try:
            writer.write(conn.send(h11.Request(method=scope["method"], target=target, headers=headers)))
            body_task = asyncio.create_task(self._send_body(conn, writer, receive))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(_CHUNK)
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    started = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": event.status_code,
                            "headers": _response_headers(list(event.headers)),
                        }
                    )
                elif isinstance(event, h11.Data):
                    await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
                # InformationalResponse (100 Continue): nothing to pass on.
            if not started:
                raise ConnectionError("the connection closed before a response")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (h11.RemoteProtocolError, ConnectionError, OSError) as exc:
            if started:
                raise  # too late for an error body; the server drops the connection
            raise ApiError(502, "PROXY::BAD_GATEWAY", f"The service on port {port} failed: {exc}") from exc
        finally:
            if body_task is not None:
                body_task.cancel()
                with contextlib.suppress(BaseException):
                    await body_task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _send_body(conn: h11.Connection, writer: asyncio.StreamWriter, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                writer.close()
                return
            chunk = message.get("body", b"")
            if chunk:
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
            if not message.get("more_body", False):
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                return
