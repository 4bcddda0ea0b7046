"""HTTP handlers of the lifecycle and diagnostics APIs, and the explicit route list.

Handlers only translate HTTP to manager calls and back; every rule lives in the managers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from osbox._wire import EGRESS_PORT, EXECD_PORT

from .._body import BadBody, read_json
from ..proxy import SandboxProxy
from ..runtime import Runtime
from .diagnostics import events_descriptor, logs_descriptor
from .errors import bad_request
from .validation import parse_create_request, parse_metadata_filter, parse_query_int

__all__ = ["lifecycle_routes"]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


#: Lifecycle bodies are small JSON documents; anything larger is refused before it is buffered.
MAX_JSON_BYTES = 1024 * 1024


async def _json_body(request: Request, *, required: bool = True) -> Any:
    try:
        return await read_json(request, MAX_JSON_BYTES, required=required)
    except BadBody as exc:
        raise bad_request(str(exc)) from None


def _int_query(request: Request, name: str, default: int) -> int:
    return parse_query_int(request.query_params.get(name), name, default)


def _bool_query(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise bad_request(f"{name} must be true or false, not {text!r}")


# Sandboxes.


async def create_sandbox(request: Request) -> Response:
    """POST /sandboxes → 202 with the sandbox Running (or Failed with the reason)."""
    runtime = _runtime(request)
    config = runtime.config
    params = parse_create_request(
        await _json_body(request),
        min_timeout=config.min_timeout_seconds,
        max_timeout=config.max_timeout_seconds,
        volumes_dir=config.volumes_dir,
        network_mode=config.network,
    )
    seed = None
    if params.snapshot_id is not None:
        params, seed = runtime.snapshots.restore(params)
    record = await runtime.manager.create(params, seed=seed)
    location = f"{request.scope.get('root_path', '')}/sandboxes/{record.id}"
    return JSONResponse(record.to_create_response(), status_code=202, headers={"Location": location})


async def list_sandboxes(request: Request) -> Response:
    """GET /sandboxes with state (OR), metadata (AND), page and pageSize."""
    metadata_text = request.query_params.get("metadata")
    body = await _runtime(request).manager.list(
        states=request.query_params.getlist("state"),
        metadata=parse_metadata_filter(metadata_text) if metadata_text else {},
        page=_int_query(request, "page", 1),
        page_size=_int_query(request, "pageSize", 20),
    )
    return JSONResponse(body)


async def get_sandbox(request: Request) -> Response:
    """GET /sandboxes/{id} → the full Sandbox."""
    record = await _runtime(request).manager.get(request.path_params["sandbox_id"])
    return JSONResponse(record.to_wire())


async def delete_sandbox(request: Request) -> Response:
    """DELETE /sandboxes/{id} → 204 once the tree is killed."""
    await _runtime(request).manager.delete(request.path_params["sandbox_id"])
    return Response(status_code=204)


async def pause_sandbox(request: Request) -> Response:
    """POST /sandboxes/{id}/pause → 202 (Paused once answered)."""
    await _runtime(request).manager.pause(request.path_params["sandbox_id"])
    return Response(status_code=202)


async def resume_sandbox(request: Request) -> Response:
    """POST /sandboxes/{id}/resume → 202 (Running once answered)."""
    await _runtime(request).manager.resume(request.path_params["sandbox_id"])
    return Response(status_code=202)


async def renew_expiration(request: Request) -> Response:
    """POST /sandboxes/{id}/renew-expiration {expiresAt} → 200 {expiresAt}."""
    body = await _json_body(request)
    expires_at = await _runtime(request).manager.renew(request.path_params["sandbox_id"], body)
    return JSONResponse({"expiresAt": expires_at})


async def patch_metadata(request: Request) -> Response:
    """PATCH /sandboxes/{id}/metadata (JSON merge patch) → 200 full Sandbox."""
    body = await _json_body(request)
    record = await _runtime(request).manager.patch_metadata(request.path_params["sandbox_id"], body)
    return JSONResponse(record.to_wire())


async def get_endpoint(request: Request) -> Response:
    """GET /sandboxes/{id}/endpoints/{port}: a proxy path, or a direct forwarder address."""
    runtime = _runtime(request)
    sandbox_id = request.path_params["sandbox_id"]
    try:
        port = int(request.path_params["port"])
    except ValueError:
        raise bad_request(f"port {request.path_params['port']!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise bad_request(f"port {port} is not between 1 and 65535")
    use_proxy = _bool_query(request, "use_server_proxy")
    expires = request.query_params.get("expires")
    if expires is not None:
        if use_proxy:
            raise bad_request("'expires' cannot be combined with use_server_proxy=true")
        if not expires.isdigit() or len(expires) > 20:
            raise bad_request("expires must be Unix epoch seconds (a decimal integer)")
    await runtime.manager.get(sandbox_id)  # 404 for an unknown sandbox
    host_header = request.headers.get("host") or f"{runtime.config.host}:{request.url.port}"
    proxied = f"{host_header}/sandboxes/{sandbox_id}/proxy/{port}"
    if port in (EXECD_PORT, EGRESS_PORT):
        execd_token, egress_token = runtime.manager.tokens(sandbox_id)
        header = (
            {"X-EXECD-ACCESS-TOKEN": execd_token}
            if port == EXECD_PORT
            else {"OPENSANDBOX-EGRESS-AUTH": egress_token}
        )
        return JSONResponse({"endpoint": proxied, "headers": header})
    if use_proxy:
        return JSONResponse({"endpoint": proxied})
    # The forwarder looks the handle up per connection: while paused or failed, connections are dropped.
    forwarded = await runtime.forwarders.open(sandbox_id, port)
    hostname = request.url.hostname or runtime.config.host
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    return JSONResponse({"endpoint": f"{hostname}:{forwarded}"})


# Snapshots.


async def create_snapshot(request: Request) -> Response:
    """POST /sandboxes/{id}/snapshots {name?} → 202 Creating."""
    body = await _json_body(request, required=False)
    record = await _runtime(request).snapshots.create(request.path_params["sandbox_id"], body)
    location = f"{request.scope.get('root_path', '')}/snapshots/{record.id}"
    return JSONResponse(record.to_wire(), status_code=202, headers={"Location": location})


async def list_snapshots(request: Request) -> Response:
    """GET /snapshots?sandboxId=&state=&page=&pageSize=."""
    body = _runtime(request).snapshots.list(
        sandbox_id=request.query_params.get("sandboxId") or None,
        states=request.query_params.getlist("state"),
        page=_int_query(request, "page", 1),
        page_size=_int_query(request, "pageSize", 20),
    )
    return JSONResponse(body)


async def get_snapshot(request: Request) -> Response:
    """GET /snapshots/{id}."""
    return JSONResponse(_runtime(request).snapshots.get(request.path_params["snapshot_id"]).to_wire())


async def delete_snapshot(request: Request) -> Response:
    """DELETE /snapshots/{id} → 204."""
    await _runtime(request).snapshots.delete(request.path_params["snapshot_id"])
    return Response(status_code=204)


# Diagnostics.


async def diagnostic_logs(request: Request) -> Response:
    """GET /sandboxes/{id}/diagnostics/logs?scope= → inline descriptor."""
    runtime = _runtime(request)
    record = await runtime.manager.get(request.path_params["sandbox_id"])
    scope = request.query_params.get("scope")
    return JSONResponse(logs_descriptor(record, scope, runtime.config.diagnostics_max_bytes))


async def diagnostic_events(request: Request) -> Response:
    """GET /sandboxes/{id}/diagnostics/events?scope= → inline descriptor."""
    runtime = _runtime(request)
    record = await runtime.manager.get(request.path_params["sandbox_id"])
    scope = request.query_params.get("scope")
    return JSONResponse(events_descriptor(record, runtime.store, scope, runtime.config.diagnostics_max_bytes))


def lifecycle_routes(proxy: SandboxProxy) -> list[BaseRoute]:
    """Every lifecycle, snapshot, diagnostics and proxy route, relative to `/` or `/v1`."""
    sandbox = "/sandboxes/{sandbox_id}"
    proxy_paths = [f"{sandbox}/proxy/{{port:int}}", f"{sandbox}/proxy/{{port:int}}/{{path:path}}"]
    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route("/sandboxes", create_sandbox, methods=["POST"]),
        Route("/sandboxes", list_sandboxes, methods=["GET"]),
        Route(sandbox, get_sandbox, methods=["GET"]),
        Route(sandbox, delete_sandbox, methods=["DELETE"]),
        Route(f"{sandbox}/pause", pause_sandbox, methods=["POST"]),
        Route(f"{sandbox}/resume", resume_sandbox, methods=["POST"]),
        Route(f"{sandbox}/renew-expiration", renew_expiration, methods=["POST"]),
        Route(f"{sandbox}/metadata", patch_metadata, methods=["PATCH"]),
        Route(f"{sandbox}/endpoints/{{port}}", get_endpoint, methods=["GET"]),
        Route(f"{sandbox}/snapshots", create_snapshot, methods=["POST"]),
        Route(f"{sandbox}/diagnostics/logs", diagnostic_logs, methods=["GET"]),
        Route(f"{sandbox}/diagnostics/events", diagnostic_events, methods=["GET"]),
        Route("/snapshots", list_snapshots, methods=["GET"]),
        Route("/snapshots/{snapshot_id}", get_snapshot, methods=["GET"]),
        Route("/snapshots/{snapshot_id}", delete_snapshot, methods=["DELETE"]),
        *(Route(path, proxy, methods=every_method) for path in proxy_paths),
        *(WebSocketRoute(path, proxy) for path in proxy_paths),
    ]
