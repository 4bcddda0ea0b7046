"""The one exception tree of osbox.

    OsboxError
    ├── APIError                       something went wrong talking to an OpenSandbox API
    │   ├── APIStatusError             the server answered with a status >= 400
    │   │   ├── BadRequestError            400
    │   │   ├── AuthenticationError        401
    │   │   ├── PermissionDeniedError      403
    │   │   ├── NotFoundError              404
    │   │   ├── ConflictError              409
    │   │   ├── PreconditionFailedError    412
    │   │   ├── UnprocessableEntityError   422
    │   │   ├── RateLimitError             429
    │   │   └── InternalServerError        >= 500
    │   ├── APIConnectionError         the request did not get an answer
    │   │   └── APITimeoutError
    │   ├── StreamError                a stream ended badly: empty, or an error object arrived mid-stream
    │   ├── PtyError                   a PTY connection failed: taken over, dropped, or an error frame
    │   └── APIResponseValidationError the answer did not have the expected shape
    ├── StdinNotSupportedError         stdin=/send_stdin on a server without osbox's stdin extension
    └── SandboxError                   raised by the high-level `Sandbox` helpers (e.g. not ready in time)
        ├── CommandFailedError         `run(..., check=True)`: the command exited non-zero
        └── FeatureNotSupportedError   the server lacks the osbox extension a call needs (`files.watch`)

Lower-layer (httpx2) errors are translated in one place, `osbox._base_client`, so none leaks out.
Messages never contain API keys or access tokens.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    from .models.events import Execution

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CommandFailedError",
    "ConflictError",
    "FeatureNotSupportedError",
    "InternalServerError",
    "NotFoundError",
    "OsboxError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "PtyError",
    "RateLimitError",
    "SandboxError",
    "StdinNotSupportedError",
    "StreamError",
    "UnprocessableEntityError",
]


class OsboxError(Exception):
    """Base class of every exception osbox raises."""


class StdinNotSupportedError(OsboxError):
    """A command was to be fed input, but the server lacks osbox's stdin extension (the OpenSandbox
    execd gives every command an empty stdin). `server` is the execd address asked."""

    def __init__(self, server: str) -> None:
        self.server = server
        super().__init__(
            f"the execd at {server} cannot feed a command's stdin (an osbox extension; OpenSandbox's "
            "execd has none): the command was stopped. Run it against `osbox serve`, or pass its input "
            "another way (a file: files.write(), then `cmd < file`)"
        )


class SandboxError(OsboxError):
    """A high-level sandbox operation could not complete (e.g. it never became ready)."""


class FeatureNotSupportedError(SandboxError):
    """The server does not offer an osbox extension the call needs (e.g. `files.watch` against an
    OpenSandbox server other than `osbox serve`); the message names the feature and the route."""


class CommandFailedError(SandboxError):
    """A command run with `check=True` exited non-zero, was killed, or did not complete.

    Attributes: `command`, `exit_code` (None when it did not complete), `stdout`, `stderr` and the whole
    `execution`. The message ends with the last lines of stderr (of stdout when stderr is empty).

        try:
            sandbox.run("make test", check=True)
        except CommandFailedError as exc:
            print(exc.exit_code, exc.stderr)
    """

    def __init__(self, command: str, execution: Execution) -> None:
        self.command = command
        self.execution = execution
        self.exit_code = execution.exit_code
        self.stdout = execution.stdout
        self.stderr = execution.stderr
        shown = command if len(command) <= 200 else f"{command[:200]}..."
        code = execution.exit_code
        outcome = "did not complete" if code is None else f"exited with {code}"
        if execution.signal is not None:
            outcome = f"was killed by {execution.signal} (exit {code})"
            if execution.timed_out:
                outcome = f"timed out and {outcome}"
        # What the server adds (e.g. "signal: killed"), unless it only repeats the exit status or signal.
        said = [
            line
            for line in (execution.error.traceback if execution.error else [])
            if line != f"exit status {code}" and not (execution.signal and line.startswith("signal: "))
        ]
        if said:
            outcome += f" ({'; '.join(said)})"
        text = f"command {shown!r} {outcome}"
        if tail := _last_lines(execution.stderr or execution.stdout):
            text += f":\n{tail}"
        super().__init__(text)


def _last_lines(output: str, lines: int = 10, chars: int = 2000) -> str:
    """The end of a command's output, for an error message: at most `lines` lines and `chars` characters."""
    tail = "\n".join(output.rstrip("\n").splitlines()[-lines:])
    return tail if len(tail) <= chars else f"...{tail[-chars:]}"


class APIError(OsboxError):
    """Something went wrong talking to an OpenSandbox API.

    `request` is the `httpx2.Request` concerned, when there was one.
    """

    request: httpx2.Request | None

    def __init__(self, message: str, *, request: httpx2.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before an answer."""

    def __init__(self, message: str = "Connection error.", *, request: httpx2.Request | None = None) -> None:
        super().__init__(message, request=request)


class APITimeoutError(APIConnectionError):
    """The request timed out. Raise `timeout=` on the client or the call if the operation is slow."""

    def __init__(self, message: str = "Request timed out.", *, request: httpx2.Request | None = None) -> None:
        super().__init__(message, request=request)


class APIResponseValidationError(APIError):
    """The server answered 2xx, but the body did not match the expected model."""

    def __init__(self, message: str, *, response: httpx2.Response, body: object) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body


class StreamError(APIError):
    """A stream ended badly: it carried no event, or the server appended an error object.

    `code` and `message` are the server's, when it sent a `{code, message}` object.
    """

    def __init__(
        self, message: str, *, code: str | None = None, request: httpx2.Request | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message, request=request)
        self.code = code
        self.server_message = message


class PtyError(APIError):
    """A PTY session's WebSocket failed before the session ended.

    `code` says why: `"TAKEN_OVER"` (another client connected with `takeover=True`; don't reconnect
    blindly), `"DISCONNECTED"` (the connection dropped: reconnect, and the output missed is replayed),
    or the code of an error frame the server sent (`"START_FAILED"`, `"INVALID_FRAME"`, ...).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class APIStatusError(APIError):
    """The server answered with a status code >= 400.

    Attributes: `status_code`, `code` and `message` (from a `{code, message}` or `{"detail": …}` body;
    for a body that is not JSON, `code` is the status text and `message` the body), `request_id`
    (`X-Request-ID`), `retry_after` (seconds, from `Retry-After`), `body` (the decoded body), `response`.
    """

    def __init__(
        self,
        *,
        response: httpx2.Response,
        code: str,
        message: str,
        body: object,
        request_id: str | None,
        retry_after: float | None,
    ) -> None:
        self.response = response
        self.status_code = response.status_code
        self.code = code
        self.body = body
        self.request_id = request_id
        self.retry_after = retry_after
        text = f"{response.status_code} {code}: {message}" if message else f"{response.status_code} {code}"
        if hint := _HINTS.get(response.status_code):
            text = f"{text} ({hint})"
        if request_id:
            text = f"{text} [request id {request_id}]"
        super().__init__(text, request=response.request)
        # `message` is the server's own message, without status, hint or request id.
        self.message = message


class BadRequestError(APIStatusError):
    """400: the request was malformed or a parameter was invalid."""


class AuthenticationError(APIStatusError):
    """401: the API key or access token is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the credentials are valid but not allowed to do this."""


class NotFoundError(APIStatusError):
    """404: the sandbox, snapshot, file, command or session does not exist."""


class ConflictError(APIStatusError):
    """409: the resource is in the wrong state for this operation (e.g. pausing a paused sandbox)."""


class PreconditionFailedError(APIStatusError):
    """412: what the operation needs is not set up (e.g. credential bindings for a sandbox created
    without `credential_proxy=True`); the message says what is missing."""


class UnprocessableEntityError(APIStatusError):
    """422: the server understood the request but rejected its content."""


class RateLimitError(APIStatusError):
    """429: too many requests. Retried automatically, honouring `Retry-After`."""


class InternalServerError(APIStatusError):
    """>= 500: the server failed."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_HINTS: dict[int, str] = {
    401: "check the API key: pass api_key= or set OPEN_SANDBOX_API_KEY; execd and egress tokens come from "
    "the sandbox endpoint's headers",
    403: "the credentials are valid but not allowed to do this",
    429: "rate limited: retry later or lower the request rate",
}


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds to wait from `Retry-After-Ms` or `Retry-After` (seconds or an HTTP date), else None."""
    import email.utils
    import time

    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def decode_error_body(content: bytes, reason: str) -> tuple[str, str, object]:
    """`(code, message, body)` from an error body.

    Accepts `{code, message}` (the spec), `{"detail": …}` (FastAPI), `{"error": …}` (execd's 401) and text.
    """
    text = content.decode("utf-8", errors="replace")
    try:
        body: Any = json.loads(text) if text.strip() else None
    except ValueError:
        return reason, text.strip(), text
    if isinstance(body, dict):
        detail = body.get("detail")
        if "code" in body or "message" in body:
            return str(body.get("code") or reason), str(body.get("message") or ""), body
        if isinstance(detail, str):
            return reason, detail, body
        if isinstance(detail, list):  # FastAPI validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", ()))
                    parts.append(f"{where}: {item.get('msg', '')}".strip(": "))
            return reason, "; ".join(parts) or json.dumps(detail), body
        if isinstance(body.get("error"), str):
            return reason, body["error"], body
    return reason, text.strip(), body


def make_status_error(response: httpx2.Response) -> APIStatusError:
    """The `APIStatusError` subclass for a response whose body has been read."""
    code, message, body = decode_error_body(response.content, response.reason_phrase or "error")
    status = response.status_code
    cls = _STATUS_ERRORS.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(
        response=response,
        code=code,
        message=message,
        body=body,
        request_id=response.headers.get("x-request-id"),
        retry_after=parse_retry_after(response.headers),
    )
