"""Reading request bodies with a size cap, shared by the lifecycle and execd apps.

Python's `json` accepts what no client should send and what the handlers cannot use: `NaN` and
`Infinity` (and `1e400`, which becomes infinity), and nesting deep enough to raise RecursionError.
`parse_json` refuses them all as `BadBody`, so every handler gets finite numbers in a shallow tree.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

__all__ = ["MAX_JSON_DEPTH", "BadBody", "parse_json", "read_capped", "read_json"]

#: Deepest nesting of arrays/objects accepted in a JSON body; every request of the APIs needs < 5.
MAX_JSON_DEPTH = 64


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
    return parse_json(raw)


def parse_json(raw: bytes, what: str = "the request body") -> Any:
    """`raw` parsed as strict JSON: finite numbers only, nested at most MAX_JSON_DEPTH deep; else BadBody.

    `what` names the document in the error message.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadBody(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"{what} is not valid JSON: {exc}") from None
    # A body can only be deeper than the limit if it has that many brackets; most have a handful.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_exceeds(value, MAX_JSON_DEPTH):
        raise BadBody(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (only finite numbers are accepted)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` deep (iterative: no recursion to exhaust)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
