"""The diagnostics API: inline text descriptors of a sandbox's logs and lifecycle events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._store import Store
from .errors import bad_request
from .records import SandboxRecord

__all__ = ["EVENT_SCOPES", "LOG_SCOPES", "events_descriptor", "logs_descriptor"]

#: Scopes this runtime answers; the spec leaves the set to the implementation.
LOG_SCOPES = ("container", "all")
EVENT_SCOPES = ("lifecycle", "runtime", "all")
_TEXT = "text/plain; charset=utf-8"


def _check_scope(scope: str | None, supported: tuple[str, ...], kind: str) -> str:
    if not scope:
        raise bad_request(
            f"the 'scope' query parameter is required for {kind}: one of {', '.join(supported)}"
        )
    if scope not in supported:
        raise bad_request(f"unsupported {kind} scope {scope!r}: use one of {', '.join(supported)}")
    return scope


def _tail(path: Path, limit: int) -> tuple[str, bool, int]:
    """The last `limit` bytes of a file (cut at a line start), whether it was cut, and its size."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= limit:
            return file.read().decode("utf-8", "replace"), False, size
        file.seek(size - limit)
        data = file.read(limit)
    newline = data.find(b"\n")
    if 0 <= newline < len(data) - 1:
        data = data[newline + 1 :]
    return data.decode("utf-8", "replace"), True, size


def _descriptor(
    record: SandboxRecord, kind: str, scope: str, content: str, truncated: bool
) -> dict[str, Any]:
    return {
        "sandboxId": record.id,
        "kind": kind,
        "scope": scope,
        "delivery": "inline",
        "contentType": _TEXT,
        "content": content,
        "contentLength": len(content.encode()),
        "truncated": truncated,
    }


def logs_descriptor(record: SandboxRecord, scope: str | None, limit: int) -> dict[str, Any]:
    """The sandbox entrypoint's own output (stdout and stderr), the newest `limit` bytes."""
    scope = _check_scope(scope, LOG_SCOPES, "logs")
    warnings: list[str] = []
    content, truncated = "", False
    if record.log_path is None:
        warnings.append("the sandbox never started, so it has no output")
    else:
        try:
            content, truncated, _ = _tail(Path(record.log_path), limit)
        except FileNotFoundError:
            warnings.append("the sandbox's output log is gone")
    body = _descriptor(record, "logs", scope, content, truncated)
    if warnings:
        body["warnings"] = warnings
    return body


def events_descriptor(record: SandboxRecord, store: Store, scope: str | None, limit: int) -> dict[str, Any]:
    """The sandbox's recorded state transitions, one line each, oldest first."""
    scope = _check_scope(scope, EVENT_SCOPES, "events")
    lines = [f"{e.at} {e.state} {e.reason}: {e.message}\n" for e in store.events(record.id)]
    content, truncated = "".join(lines), False
    while len(content.encode()) > limit and lines:
        lines.pop(0)
        content, truncated = "".join(lines), True
    return _descriptor(record, "events", scope, content, truncated)
