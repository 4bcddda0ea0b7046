"""osbox: the Python SDK for the OpenSandbox API, and a local OpenSandbox-compatible runtime."""

__version__ = "0.1.0"

from ._egress import AsyncEgressClient, EgressClient
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    OsboxError,
    PermissionDeniedError,
    RateLimitError,
    SandboxError,
    StreamError,
    UnprocessableEntityError,
)
from ._execd import AsyncExecdClient, CommandLogs, ExecdClient
from ._files import DownloadResult, FileUpload
from ._lifecycle import AsyncLifecycleClient, LifecycleClient
from ._streaming import STOP, AsyncStream, Stream

__all__ = [
    "STOP",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncEgressClient",
    "AsyncExecdClient",
    "AsyncLifecycleClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "CommandLogs",
    "ConflictError",
    "DownloadResult",
    "EgressClient",
    "ExecdClient",
    "FileUpload",
    "InternalServerError",
    "LifecycleClient",
    "NotFoundError",
    "OsboxError",
    "PermissionDeniedError",
    "RateLimitError",
    "SandboxError",
    "Stream",
    "StreamError",
    "UnprocessableEntityError",
    "__version__",
]
