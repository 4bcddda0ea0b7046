"""The one exception the HTTP layer turns into an OpenSandbox `{code, message}` error body.

Codes follow the reference server's namespaced names (`SANDBOX::SANDBOX_NOT_FOUND`, ...), so clients
written against it can branch on them unchanged.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "bad_request",
    "conflict",
    "not_found",
    "snapshot_not_found",
]


class ApiError(Exception):
    """An error with an HTTP status and a machine-readable code; the message is for a person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "SANDBOX::INVALID_PARAMETER") -> ApiError:
    """A 400 for a request the server will not accept as written."""
    return ApiError(400, code, message)


def not_found(sandbox_id: str) -> ApiError:
    """A 404 for a sandbox id that does not exist (or no longer does)."""
    return ApiError(404, "SANDBOX::SANDBOX_NOT_FOUND", f"Sandbox {sandbox_id!r} not found")


def snapshot_not_found(snapshot_id: str) -> ApiError:
    """A 404 for an unknown snapshot id."""
    return ApiError(404, "SNAPSHOT::SNAPSHOT_NOT_FOUND", f"Snapshot {snapshot_id!r} not found")


def conflict(code: str, message: str) -> ApiError:
    """A 409: the operation does not fit the resource's current state."""
    return ApiError(409, code, message)
