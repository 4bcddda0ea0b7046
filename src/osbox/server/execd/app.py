"""The execd ASGI app: the route table, listed explicitly, and the one error boundary.

Every endpoint is wrapped by `_guarded`, which turns `ExecdError` into its `{code, message}`
response and any other exception into a logged 500 `RUNTIME_ERROR`, so a request can never
crash the server or leak a traceback. Unknown routes and methods answer 404/405 in the same shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .code import CodeApi
from .commands import CommandsApi
from .errors import RUNTIME_ERROR, ExecdError, error_body, error_response, log
from .files import FILE_ROUTES
from .metrics import MetricsApi
from .pty import PtyApi
from .sessions import SessionsApi
from .transfer import download, upload
from .watch import watch_files

__all__ = ["build_app"]

Endpoint = Callable[[Request], Awaitable[Response]]
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _guarded(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ExecdError as exc:
            return error_response(exc)
        except Exception:
            log.exception("execd %s %s failed", request.method, request.url.path)
            return error_response(ExecdError(500, RUNTIME_ERROR, "internal error while handling the request"))

    guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
    guarded.__doc__ = endpoint.__doc__
    return guarded


async def ping(request: Request) -> Response:
    """`GET /ping`: 200, empty body."""
    return Response(status_code=200)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_REQUEST")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def build_app(
    commands: CommandsApi, sessions: SessionsApi, code: CodeApi, metrics: MetricsApi, pty: PtyApi
) -> Starlette:
    """The execd app over the given endpoint groups."""
    table: list[tuple[str, Endpoint, list[str]]] = [
        ("/ping", ping, ["GET"]),
        ("/command", commands.run, ["POST"]),
        ("/command", commands.interrupt, ["DELETE"]),
        ("/command/status/{id}", commands.status, ["GET"]),
        ("/command/{id}/logs", commands.logs, ["GET"]),
        ("/command/{id}/stdin", commands.input.stdin, ["POST"]),
        ("/command/{id}/signal", commands.input.signal, ["POST"]),
        ("/session", sessions.create, ["POST"]),
        ("/session/{id}/run", sessions.run, ["POST"]),
        ("/session/{id}", sessions.delete, ["DELETE"]),
        *FILE_ROUTES,
        ("/files/upload", upload, ["POST"]),
        ("/files/download", download, ["GET"]),
        ("/files/watch", watch_files, ["GET"]),  # osbox extension
        ("/metrics", metrics.get, ["GET"]),
        ("/metrics/watch", metrics.watch, ["GET"]),
        ("/code", code.run, ["POST"]),
        ("/code", code.interrupt, ["DELETE"]),
        ("/code/context", code.create, ["POST"]),
        ("/code/contexts", code.list, ["GET"]),
        ("/code/contexts", code.delete_language, ["DELETE"]),
        ("/code/contexts/{id}", code.get, ["GET"]),
        ("/code/contexts/{id}", code.delete, ["DELETE"]),
        ("/pty", pty.create, ["POST"]),
        ("/pty", pty.list, ["GET"]),
        ("/pty/{id}", pty.status, ["GET"]),
        ("/pty/{id}", pty.delete, ["DELETE"]),
    ]
    routes: list[BaseRoute] = [Route(path, _guarded(fn), methods=methods) for path, fn, methods in table]
    routes.append(WebSocketRoute("/pty/{id}/ws", pty.websocket))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
