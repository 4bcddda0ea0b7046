"""Reading requests: the target sandbox, JSON bodies and query parameters, with 400s on bad input."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from osbox.server._backend.base import SandboxHandle

from .._body import BadBody, read_json
from .errors import MISSING_QUERY, ExecdError, bad_request

__all__ = ["json_body", "optional_int", "query_all", "query_one", "sandbox_of"]

MAX_JSON_BYTES = 8 * 1024 * 1024


def sandbox_of(request: Request) -> SandboxHandle:
    """The sandbox the lifecycle server resolved and authenticated for this request."""
    handle = request.scope.get("osbox.sandbox")
    if not isinstance(handle, SandboxHandle):
        raise ExecdError(500, "RUNTIME_ERROR", "no sandbox attached to this request")
    return handle


async def json_body(request: Request, *, required: bool = True) -> Any:
    """The parsed JSON body; malformed or too large → 400 `INVALID_REQUEST_BODY`."""
    try:
        return await read_json(request, MAX_JSON_BYTES, required=required)
    except BadBody as exc:
        raise bad_request(str(exc)) from None


def json_object(value: Any, what: str = "request body") -> dict[str, Any]:
    """`value` if it is a JSON object, else 400."""
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    return value


def query_all(request: Request, name: str) -> list[str]:
    """Every value of a repeated query parameter; none → 400 `MISSING_QUERY`."""
    values = [v for v in request.query_params.getlist(name) if v != ""]
    if not values:
        raise bad_request(f"missing query parameter '{name}'", MISSING_QUERY)
    return values


def query_one(request: Request, name: str) -> str:
    """A required query parameter; missing → 400 `MISSING_QUERY`."""
    return query_all(request, name)[0]


def optional_int(value: Any, name: str, *, minimum: int = 0) -> int | None:
    """An optional integer field (JSON number or numeric string) of at least `minimum`."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise bad_request(f"'{name}' must be an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer")
    if value < minimum:
        raise bad_request(f"'{name}' must be >= {minimum}")
    return value


def optional_str(value: Any, name: str) -> str | None:
    """An optional string field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string")
    return value
