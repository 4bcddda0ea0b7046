"""osbox: the Python SDK for the OpenSandbox API, and a local OpenSandbox-compatible runtime.

Names load on first use (see `osbox._lazy`): `import osbox` is cheap, and using one client does not
import the others.
"""

from ._lazy import lazy_exports

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing would double the cost of `import osbox`

__version__ = "0.1.0"

_EXPORTS = {
    "._sync.egress": ("EgressClient",),
    "._async.egress": ("AsyncEgressClient",),
    "._exceptions": (
        "APIConnectionError",
        "APIError",
        "APIResponseValidationError",
        "APIStatusError",
        "APITimeoutError",
        "AuthenticationError",
        "BadRequestError",
        "CommandFailedError",
        "FeatureNotSupportedError",
        "ConflictError",
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
    ),
    "._execd": ("CommandLogs", "output_is_exact"),
    "._sync.execd": ("ExecdClient",),
    "._async.execd": ("AsyncExecdClient",),
    "._files": ("DownloadResult", "FileUpload", "Progress"),
    "._sync.lifecycle": ("LifecycleClient",),
    "._async.lifecycle": ("AsyncLifecycleClient",),
    "._sync.sandbox": ("Sandbox",),
    "._async.sandbox": ("AsyncSandbox",),
    "._sync.commands": ("CommandHandle",),
    "._async.commands": ("AsyncCommandHandle",),
    "._pty": ("PtyExit", "PtyOutput", "PtySessionStatus"),
    "._sync.pty": ("PtyConnection",),
    "._async.pty": ("AsyncPtyConnection",),
    "._sync.sandbox_pty": ("PtyHandle", "SandboxPty"),
    "._async.sandbox_pty": ("AsyncPtyHandle", "AsyncSandboxPty"),
    "._sync.sandbox_files": ("SandboxFiles",),
    "._async.sandbox_files": ("AsyncSandboxFiles",),
    "._sync.sandbox_egress": ("SandboxEgress",),
    "._async.sandbox_egress": ("AsyncSandboxEgress",),
    "._streaming": ("STOP",),
    "._sync.streaming": ("Stream",),
    "._async.streaming": ("AsyncStream",),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._async.commands import AsyncCommandHandle
    from ._async.egress import AsyncEgressClient
    from ._async.execd import AsyncExecdClient
    from ._async.lifecycle import AsyncLifecycleClient
    from ._async.pty import AsyncPtyConnection
    from ._async.sandbox import AsyncSandbox
    from ._async.sandbox_egress import AsyncSandboxEgress
    from ._async.sandbox_files import AsyncSandboxFiles
    from ._async.sandbox_pty import AsyncPtyHandle, AsyncSandboxPty
    from ._async.streaming import AsyncStream
    from ._exceptions import (
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        CommandFailedError,
        ConflictError,
        FeatureNotSupportedError,
        InternalServerError,
        NotFoundError,
        OsboxError,
        PermissionDeniedError,
        PreconditionFailedError,
        PtyError,
        RateLimitError,
        SandboxError,
        StdinNotSupportedError,
        StreamError,
        UnprocessableEntityError,
    )
    from ._execd import CommandLogs, output_is_exact
    from ._files import DownloadResult, FileUpload, Progress
    from ._pty import PtyExit, PtyOutput, PtySessionStatus
    from ._streaming import STOP
    from ._sync.commands import CommandHandle
    from ._sync.egress import EgressClient
    from ._sync.execd import ExecdClient
    from ._sync.lifecycle import LifecycleClient
    from ._sync.pty import PtyConnection
    from ._sync.sandbox import Sandbox
    from ._sync.sandbox_egress import SandboxEgress
    from ._sync.sandbox_files import SandboxFiles
    from ._sync.sandbox_pty import PtyHandle, SandboxPty
    from ._sync.streaming import Stream

__all__ = [
    "STOP",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncCommandHandle",
    "AsyncEgressClient",
    "AsyncExecdClient",
    "AsyncLifecycleClient",
    "AsyncPtyConnection",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncSandboxEgress",
    "AsyncSandboxFiles",
    "AsyncSandboxPty",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "CommandFailedError",
    "CommandHandle",
    "CommandLogs",
    "ConflictError",
    "DownloadResult",
    "EgressClient",
    "ExecdClient",
    "FeatureNotSupportedError",
    "FileUpload",
    "InternalServerError",
    "LifecycleClient",
    "NotFoundError",
    "OsboxError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Progress",
    "PtyConnection",
    "PtyError",
    "PtyExit",
    "PtyHandle",
    "PtyOutput",
    "PtySessionStatus",
    "RateLimitError",
    "Sandbox",
    "SandboxEgress",
    "SandboxError",
    "SandboxFiles",
    "SandboxPty",
    "StdinNotSupportedError",
    "Stream",
    "StreamError",
    "UnprocessableEntityError",
    "__version__",
    "output_is_exact",
]
