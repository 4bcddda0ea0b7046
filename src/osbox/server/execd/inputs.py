"""Reading requests: the target sandbox, JSON bodies and query parameters, with 400s on bad input."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request

from osbox.server._backend.base import SandboxHandle

from .._body import BadBody, read_json
from .errors import MISSING_QUERY, bad_request
from .request_state import request_state

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_TIMEOUT_MS",
    "check_exec_size",
    "json_body",
    "optional_int",
    "query_all",
    "query_one",
    "sandbox_of",
]

MAX_JSON_BYTES = 8 * 1024 * 1024
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
#: Longest command `timeout` (ms): a year; a command that should run longer omits the timeout.
MAX_TIMEOUT_MS = 365 * 24 * 3600 * 1000
#: Linux's per-argument limit for execve (32 pages, counting the NUL); fixed in the kernel.
MAX_ARG_STRLEN = 32 * 4096
#: The whole argv + environment for execve: a quarter of the stack limit (typically 2 MiB).
ARG_MAX = os.sysconf("SC_ARG_MAX")
_POINTER_SIZE = 8
#: A decimal integer as a query string or JSON string may carry it; short enough to convert cheaply.
_DECIMAL = re.compile(r"-?[0-9]{1,30}")


def sandbox_of(request: Request) -> SandboxHandle:
    """The sandbox the server shell resolved and authenticated for this request."""
    return request_state(request).sandbox


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


def optional_int(value: Any, name: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int | None:
    """An optional integer field (JSON number or decimal string) from `minimum` to `maximum`, else 400.

    The spec types these as int32/int64: anything outside, or not a whole number, is refused here
    rather than overflowing a timer, a syscall or a C integer further down.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise bad_request(f"'{name}' must be an integer")
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer")
    if not minimum <= value <= maximum:
        raise bad_request(f"'{name}' must be an integer from {minimum} to {maximum}")
    return value


def check_exec_size(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """400 when `execve` would refuse `argv` and `env` as too long ("Argument list too long").

    Linux caps each argument or `KEY=value` string at MAX_ARG_STRLEN bytes, and all of them (with
    their NULs and pointers) at ARG_MAX; a command is one argument of `bash -c`.
    """
    strings = [*argv, *(f"{key}={value}" for key, value in env.items())]
    for text in strings:
        size = len(text.encode("utf-8", "surrogateescape"))
        if size >= MAX_ARG_STRLEN:
            raise bad_request(
                f"a command (or an environment variable) of {size} bytes is too long to run: "
                f"Linux allows at most {MAX_ARG_STRLEN - 1} bytes per argument"
            )
    total = sum(len(text.encode("utf-8", "surrogateescape")) + 1 + _POINTER_SIZE for text in strings)
    if total > ARG_MAX:
        raise bad_request(
            f"the command and its environment take {total} bytes, too many to run: "
            f"Linux allows at most {ARG_MAX} bytes of arguments and environment together"
        )


def optional_str(value: Any, name: str) -> str | None:
    """An optional string field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string")
    return value
