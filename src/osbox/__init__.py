"""osbox: the Python SDK for the OpenSandbox API, and a local OpenSandbox-compatible runtime.

Names load on first use (see `osbox._lazy`): `import osbox` is cheap, and using one client does not
import the others.
"""

from ._lazy import lazy_exports

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing would double the cost of `import osbox`

__version__ = "0.1.0"

_EXPORTS = {
    "._egress": ("AsyncEgressClient", "EgressClient"),
    "._exceptions": (
        "APIConnectionError",
        "APIError",
        "APIResponseValidationError",
        "APIStatusError",
        "APITimeoutError",
        "AuthenticationError",
        "BadRequestError",
        "ConflictError",
        "InternalServerError",
        "NotFoundError",
        "OsboxError",
        "PermissionDeniedError",
        "RateLimitError",
        "SandboxError",
        "StreamError",
        "UnprocessableEntityError",
    ),
    "._execd": ("AsyncExecdClient", "CommandLogs", "ExecdClient"),
    "._files": ("DownloadResult", "FileUpload", "Progress"),
    "._lifecycle": ("AsyncLifecycleClient", "LifecycleClient"),
    "._sandbox": ("AsyncSandbox", "Sandbox"),
    "._streaming": ("STOP",),
    "._sync.streaming": ("Stream",),
    "._async.streaming": ("AsyncStream",),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._async.streaming import AsyncStream
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
    from ._files import DownloadResult, FileUpload, Progress
    from ._lifecycle import AsyncLifecycleClient, LifecycleClient
    from ._sandbox import AsyncSandbox, Sandbox
    from ._streaming import STOP
    from ._sync.streaming import Stream

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
    "AsyncSandbox",
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
    "Progress",
    "RateLimitError",
    "Sandbox",
    "SandboxError",
    "Stream",
    "StreamError",
    "UnprocessableEntityError",
    "__version__",
]
