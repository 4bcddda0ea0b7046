"""Reading request bodies with a size cap, shared by the lifecycle and execd apps."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["BodyTooLarge", "read_capped"]


class BodyTooLarge(ValueError):
    """The request body is larger than the route accepts; callers answer 400 with this message."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, read as it arrives; stops at `limit` bytes instead of buffering an unbounded body."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"request body larger than {limit} bytes")
    return bytes(body)
