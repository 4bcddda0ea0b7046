"""Models of the execd API (``execd-api.yaml``): commands, sessions, code contexts, files, metrics.

execd's JSON is snake_case, so these models derive from the snake_case bases (attribute name = wire name);
the one camelCase field, ``replacedCount``, has its own camelCase model. Stream events live in
:mod:`osbox.models.events` (the spec's ``ServerStreamEvent`` is :class:`~osbox.models.events.StreamEvent`).

File modes are octal digits written as a decimal integer on the wire: ``755`` means ``0o755``. Convert with
:func:`mode_to_wire` and :func:`mode_from_wire`. The bare maps and arrays execd uses as bodies
(``{path: Permission}``, ``[RenameFileItem]``, ...) are :class:`~osbox.models.WireRootModel` subclasses.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ._base import (
    OpenStrEnum,
    SnakeCaseRequestModel,
    SnakeCaseWireModel,
    UtcDateTime,
    WireModel,
    WireRootModel,
)
from .events import StreamEvent

__all__ = [
    "CodeContext",
    "CodeContextList",
    "CodeContextRequest",
    "CommandStatusResponse",
    "CreatePtyRequest",
    "CreatePtyResponse",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "FileInfo",
    "FileInfoList",
    "FileInfoMap",
    "FileMetadata",
    "FileType",
    "Metrics",
    "Permission",
    "PermissionMap",
    "RenameFileItem",
    "RenameFilesRequest",
    "ReplaceFileContentItem",
    "ReplaceFileContentRequest",
    "ReplaceFileContentResponse",
    "ReplaceFileContentResult",
    "RunCodeRequest",
    "RunCommandRequest",
    "RunInSessionRequest",
    "ServerStreamEvent",
    "mode_from_wire",
    "mode_to_wire",
]

ServerStreamEvent = StreamEvent
"""The spec's name for a stream event."""

_MAX_MODE = 0o7777


def mode_to_wire(mode: int) -> int:
    """Permission bits as execd writes them: ``mode_to_wire(0o755) == 755``.

    Raises ``ValueError`` for a negative mode or one with bits beyond ``0o7777``.
    """
    if not 0 <= mode <= _MAX_MODE:
        raise ValueError(f"file mode {mode:#o} is outside 0o0..0o7777")
    return int(f"{mode:o}")


def mode_from_wire(value: int) -> int:
    """Permission bits from execd's form: ``mode_from_wire(755) == 0o755``.

    Raises ``ValueError`` when the decimal digits are not octal digits (e.g. ``789``) or exceed ``7777``.
    """
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise ValueError(f"file mode {value} is not written in octal digits") from None
    if not 0 <= mode <= _MAX_MODE:
        raise ValueError(f"file mode {value} is outside 0..7777")
    return mode


# --- sessions, commands, code ------------------------------------------------------------------------------


class CreateSessionRequest(SnakeCaseRequestModel):
    """Body of ``POST /session`` (optional): the session's working directory."""

    cwd: str | None = None


class CreateSessionResponse(SnakeCaseWireModel):
    """Answer of ``POST /session``."""

    session_id: str


class RunInSessionRequest(SnakeCaseRequestModel):
    """Body of ``POST /session/{id}/run``; ``timeout`` in milliseconds (0 or unset: no limit)."""

    command: str
    cwd: str | None = None
    timeout: int | None = Field(default=None, ge=0)


class RunCommandRequest(SnakeCaseRequestModel):
    """Body of ``POST /command``; ``timeout`` in milliseconds. ``gid`` needs ``uid``.

    Environment values may be secrets and stay out of ``repr``.
    """

    command: str
    cwd: str | None = None
    background: bool = False
    timeout: int | None = Field(default=None, ge=1)
    uid: int | None = Field(default=None, ge=0)
    gid: int | None = Field(default=None, ge=0)
    envs: dict[str, str] | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _gid_needs_uid(self) -> RunCommandRequest:
        if self.gid is not None and self.uid is None:
            raise ValueError("gid requires uid")
        return self


class CommandStatusResponse(SnakeCaseWireModel):
    """Answer of ``GET /command/status/{id}``; ``exit_code`` and ``finished_at`` are null while running.

    ``signal`` (``"SIGKILL"``) and ``timed_out`` are osbox's: a command a signal killed has exit code
    128 + N, and ``timed_out`` is true when its timeout sent the signal.
    """

    id: str | None = None
    content: str | None = None
    running: bool | None = None
    exit_code: int | None = None
    error: str | None = None
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    signal: str | None = None
    timed_out: bool = False


class CodeContextRequest(SnakeCaseRequestModel):
    """Body of ``POST /code/context``. ``cwd`` is honoured by execd though the spec does not list it."""

    language: str | None = None
    cwd: str | None = None


class CodeContext(SnakeCaseWireModel):
    """A code execution context (a Jupyter kernel). An empty ``id`` means the language's default context."""

    id: str | None = None
    language: str = ""


class CodeContextList(WireRootModel[list[CodeContext]]):
    """Answer of ``GET /code/contexts``."""


class RunCodeRequest(SnakeCaseRequestModel):
    """Body of ``POST /code``. An empty ``context.language`` runs the code as a shell command.

    ``timeout`` (milliseconds) is an osbox extension: ``osbox serve`` interrupts a cell that runs
    longer and ends it with a ``Timeout`` error; a server without it ignores the field.
    """

    code: str
    context: CodeContext | None = None
    timeout: int | None = Field(default=None, ge=1)


class CreatePtyRequest(SnakeCaseRequestModel):
    """Body of ``POST /pty`` (execd extension outside the spec)."""

    cwd: str | None = None
    command: str | None = None


class CreatePtyResponse(SnakeCaseWireModel):
    """Answer of ``POST /pty`` (execd extension outside the spec)."""

    session_id: str


# --- filesystem --------------------------------------------------------------------------------------------


class FileType(OpenStrEnum):
    """Type of a filesystem entry (open: unknown values validate)."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class FileInfo(SnakeCaseWireModel):
    """Metadata of a file (``lstat``); ``mode`` in execd's decimal-octal form (see :func:`mode_from_wire`)."""

    path: str
    type: FileType | None = None
    size: int
    modified_at: UtcDateTime
    created_at: UtcDateTime
    owner: str
    group: str
    mode: int


class FileInfoMap(WireRootModel[dict[str, FileInfo]]):
    """Answer of ``GET /files/info``: ``{path: FileInfo}``."""


class FileInfoList(WireRootModel[list[FileInfo]]):
    """Answer of ``GET /files/search`` and ``GET /directories/list``."""


class Permission(SnakeCaseWireModel):
    """Ownership and mode to apply; ``mode`` in decimal-octal form (spec default 755, omitted if unset)."""

    owner: str | None = None
    group: str | None = None
    mode: int = 755


class PermissionMap(WireRootModel[dict[str, Permission]]):
    """Body of ``POST /files/permissions`` and ``POST /directories``: ``{path: Permission}``."""


class FileMetadata(SnakeCaseWireModel):
    """The JSON ``metadata`` part that precedes each ``file`` part of ``POST /files/upload``."""

    path: str | None = None
    owner: str | None = None
    group: str | None = None
    mode: int | None = None


class RenameFileItem(SnakeCaseWireModel):
    """One move of ``POST /files/mv``."""

    src: str
    dest: str


class RenameFilesRequest(WireRootModel[list[RenameFileItem]]):
    """Body of ``POST /files/mv``."""


class ReplaceFileContentItem(SnakeCaseWireModel):
    """Replace every occurrence of ``old`` (non-empty) by ``new``."""

    old: str = Field(min_length=1)
    new: str


class ReplaceFileContentRequest(WireRootModel[dict[str, ReplaceFileContentItem]]):
    """Body of ``POST /files/replace``: ``{path: ReplaceFileContentItem}``."""


class ReplaceFileContentResult(WireModel):
    """Per-file result of ``POST /files/replace?verbose=true`` (camelCase on the wire)."""

    replaced_count: int


class ReplaceFileContentResponse(WireRootModel[dict[str, ReplaceFileContentResult]]):
    """Answer of ``POST /files/replace?verbose=true``: ``{path: ReplaceFileContentResult}``."""


# --- metrics -----------------------------------------------------------------------------------------------


class FileWatchEvent(SnakeCaseWireModel):
    """One event of ``GET /files/watch`` (an osbox extension): ``type`` is ``create``, ``modify``,
    ``delete``, ``move`` (``old_path`` is where it was) or ``overflow`` (the sandbox's kernel dropped
    events); ``init`` (``text`` = the watched path) and ``ping`` carry no change."""

    type: str
    path: str = ""
    is_dir: bool = False
    old_path: str | None = None
    text: str | None = None
    timestamp: int | None = None

    @property
    def is_change(self) -> bool:
        """Whether it reports a change (not ``init`` nor ``ping``)."""
        return self.type not in ("init", "ping")


class Metrics(SnakeCaseWireModel):
    """System resource usage (``GET /metrics``, and each line of ``GET /metrics/watch``).

    ``timestamp`` is Unix milliseconds.
    """

    cpu_count: float
    cpu_used_pct: float
    mem_total_mib: float
    mem_used_mib: float
    timestamp: int
