"""Errors of the execd API and the one place that turns them into `{code, message}` responses.

Codes are those of the reference execd (wire-behaviour §1.1), plus `PERMISSION_DENIED` (403),
which the reference folds into `RUNTIME_ERROR`; a sandbox user hitting a read-only or
root-owned path is a client-side condition, so it gets a 4xx here.

Failures raised inside the sandbox arrive as exceptions carrying an `errno` (the backend's
`SandboxOSError`, or a plain `OSError`); `from_sandbox_error` maps the errno to a status, and
`in_sandbox` awaits one backend operation with that mapping.
"""

from __future__ import annotations

import errno as _errno
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

__all__ = [
    "ExecdError",
    "bad_request",
    "error_body",
    "error_response",
    "from_sandbox_error",
    "in_sandbox",
    "not_found",
]

log = logging.getLogger("osbox.server.execd")
T = TypeVar("T")

INVALID_REQUEST_BODY = "INVALID_REQUEST_BODY"
MISSING_QUERY = "MISSING_QUERY"
RUNTIME_ERROR = "RUNTIME_ERROR"
INVALID_FILE = "INVALID_FILE"
INVALID_FILE_CONTENT = "INVALID_FILE_CONTENT"
INVALID_FILE_METADATA = "INVALID_FILE_METADATA"
FILE_NOT_FOUND = "FILE_NOT_FOUND"
CONTEXT_NOT_FOUND = "CONTEXT_NOT_FOUND"
NOT_SUPPORTED = "NOT_SUPPORTED"
PERMISSION_DENIED = "PERMISSION_DENIED"


class ExecdError(Exception):
    """An API error with its HTTP status, `code` and human `message`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"ExecdError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = INVALID_REQUEST_BODY) -> ExecdError:
    """A 400 error."""
    return ExecdError(400, code, message)


def not_found(message: str, code: str = FILE_NOT_FOUND) -> ExecdError:
    """A 404 error."""
    return ExecdError(404, code, message)


_NOT_FOUND = {_errno.ENOENT, _errno.ESRCH}
_DENIED = {_errno.EACCES, _errno.EPERM, _errno.EROFS}
_BAD_INPUT = {
    _errno.EEXIST,
    _errno.ENOTDIR,
    _errno.EISDIR,
    _errno.ENOTEMPTY,
    _errno.EINVAL,
    _errno.ENAMETOOLONG,
    _errno.ELOOP,
    _errno.EXDEV,
    _errno.EBUSY,
    _errno.ETXTBSY,
}


def from_sandbox_error(exc: BaseException) -> ExecdError:
    """Map a failure of a sandbox operation (errno-carrying, or ValueError) to an API error."""
    if isinstance(exc, ExecdError):
        return exc
    if isinstance(exc, ValueError):
        return bad_request(str(exc) or "invalid argument")
    number = getattr(exc, "errno", None)
    text = _describe(exc)
    if number in _NOT_FOUND:
        return not_found(text)
    if number in _DENIED:
        return ExecdError(403, PERMISSION_DENIED, text)
    if number in _BAD_INPUT:
        return bad_request(text, INVALID_FILE)
    return ExecdError(500, RUNTIME_ERROR, text)


def _describe(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    filename = getattr(exc, "filename", None)
    if strerror and filename:
        return f"{strerror}: {filename}"
    return str(exc) or type(exc).__name__


def error_body(code: str, message: str) -> dict[str, Any]:
    """The `{code, message}` object every error carries."""
    return {"code": code, "message": message}


def error_response(exc: ExecdError) -> JSONResponse:
    """The HTTP response for an `ExecdError`."""
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)


def error_event(exc: BaseException) -> bytes:
    """An error appended to a stream after `init`: a bare `{code, message}` object."""
    err = exc if isinstance(exc, ExecdError) else ExecdError(500, RUNTIME_ERROR, str(exc))
    return json.dumps(error_body(err.code, err.message), separators=(",", ":")).encode() + b"\n\n"


async def in_sandbox(operation: Awaitable[T], what: str) -> T:
    """Await a backend operation (`handle.files.stat(...)`, say) with every failure turned into an
    `ExecdError`; `what` names the operation in the log and the message of an unexpected failure."""
    try:
        return await operation
    except (ExecdError, NotImplementedError):
        raise
    except (OSError, ValueError) as exc:
        raise from_sandbox_error(exc) from None
    except Exception as exc:
        if getattr(exc, "errno", None) is not None:
            raise from_sandbox_error(exc) from None
        log.warning("sandbox op %s failed: %s", what, exc)
        raise ExecdError(500, RUNTIME_ERROR, f"{what} failed: {exc}") from None
