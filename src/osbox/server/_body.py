"""Reading request bodies with a size cap, shared by the lifecycle and execd apps."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

__all__ = ["BadBody", "read_capped", "read_json"]


class BadBody(ValueError):
    """The request body is unusable (too large, missing, not JSON); callers answer 400 with this message."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, read as it arrives; stops at `limit` bytes instead of buffering an unbounded body."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadBody(f"request body larger than {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int, *, required: bool = True) -> Any:
    """The body parsed as JSON (None for an empty body that is not `required`); BadBody otherwise."""
    raw = await read_capped(request, limit)
    if not raw.strip():
        if required:
            raise BadBody("a JSON request body is required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"the request body is not valid JSON: {exc}") from None
