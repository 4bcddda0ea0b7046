"""The `osbox serve` ASGI app: lifecycle, diagnostics and proxy routes at `/` and `/v1`.

Middleware, outermost first:
1. `RequestIdMiddleware` — every response carries `X-Request-ID` (echoed, or a fresh uuid4).
2. `ApiKeyMiddleware` — `OPEN-SANDBOX-API-KEY` checked in constant time, except `/health`
   and the proxy routes (which the reference leaves open; execd checks its own token).
3. Starlette's exception middleware — `error_response` turns every error into `{code, message}`.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ._backend.base import Backend
from .config import ServerConfig
from .lifecycle.errors import ApiError
from .lifecycle.routes import lifecycle_routes
from .proxy import SandboxProxy
from .runtime import Runtime

__all__ = ["create_app", "error_response"]

_log = logging.getLogger("osbox.server")
_REQUEST_ID_KEY = "osbox.request_id"
_OPEN_PATHS = re.compile(r"^(/v1)?(/health|/sandboxes/[^/]+/proxy/\d+(/.*)?)$")
_STATUS_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    501: "NOT_SUPPORTED",
}


def _json_error(status: int, code: str, message: str, request_id: str | None) -> JSONResponse:
    headers = {"X-Request-ID": request_id} if request_id else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def error_response(request: HTTPConnection, exc: Exception) -> Response | None:
    """The one place errors become `{code, message}` responses (ApiError, HTTPException, crashes).

    A WebSocket has no response body to carry them: it is closed with a policy/internal-error code.
    """
    request_id = request.scope.get(_REQUEST_ID_KEY)
    if isinstance(request, WebSocket):
        status = exc.status if isinstance(exc, ApiError) else 500
        await request.close(code=1011 if status >= 500 else 1008, reason=str(exc)[:120])
        return None
    if isinstance(exc, ApiError):
        return _json_error(exc.status, exc.code, exc.message, request_id)
    if isinstance(exc, HTTPException):
        code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        return _json_error(exc.status_code, code, str(exc.detail), request_id)
    _log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return _json_error(500, "INTERNAL_ERROR", "The server failed unexpectedly; see its log", request_id)


# Starlette calls the same handler for HTTP requests and WebSockets; its types keep them apart.
_ONE_HANDLER = cast(ExceptionHandler, error_response)


class RequestIdMiddleware:
    """Echo the client's `X-Request-ID` or generate one, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
        request_id = given[:200] if given else str(uuid.uuid4())
        scope[_REQUEST_ID_KEY] = request_id  # shared dict: the error handler reads it too

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """Require `OPEN-SANDBOX-API-KEY` when the server has a key (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._key is None
            or scope["type"] not in ("http", "websocket")
            or _OPEN_PATHS.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"open-sandbox-api-key")
        if given is not None and hmac.compare_digest(given, self._key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        code, message = (
            ("MISSING_API_KEY", "The OPEN-SANDBOX-API-KEY header is required")
            if given is None
            else ("INVALID_API_KEY", "The OPEN-SANDBOX-API-KEY header is not valid")
        )
        response = _json_error(401, code, message, scope.get(_REQUEST_ID_KEY))
        await response(scope, receive, send)


async def health(request: Request) -> Response:
    """GET /health → {"status": "healthy"} (no authentication)."""
    return JSONResponse({"status": "healthy"})


def create_app(config: ServerConfig, *, backend: Backend | None = None) -> Starlette:
    """The whole `osbox serve` app; its lifespan starts and stops the runtime (and its sandboxes)."""
    runtime = Runtime(config, backend)
    proxy = SandboxProxy(
        runtime.sandbox_handle, runtime.execd_token, lambda: runtime.execd, egress=runtime.egress_app
    )
    routes = lifecycle_routes(proxy)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await runtime.start()
        except Exception as exc:
            app.state.startup_error = exc  # LocalServer reports it to its caller
            raise
        try:
            yield
        finally:
            await runtime.close()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/health", health, methods=["GET"]),
            Mount("/v1", routes=routes),
            *routes,
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(ApiKeyMiddleware, api_key=config.api_key),
        ],
        exception_handlers=dict.fromkeys((ApiError, HTTPException, Exception), _ONE_HANDLER),
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.startup_error = None
    return app
