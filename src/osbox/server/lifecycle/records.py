"""What the lifecycle server remembers about sandboxes and snapshots, and how they go on the wire."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from .errors import bad_request

__all__ = [
    "LIVE_STATES",
    "SandboxRecord",
    "SnapshotRecord",
    "format_quantity",
    "format_time",
    "page_of",
    "parse_time",
    "utcnow",
]

#: States in which a sandbox has (or should have) a process tree the server must re-adopt.
LIVE_STATES = ("Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping")


def utcnow() -> datetime:
    """The current time, UTC, to the microsecond."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a `Z`, millisecond precision (what the reference server emits)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive times are taken as UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past the last datetime in UTC
        raise ValueError(f"{text!r} is out of the range of dates") from None


def page_of(
    records: Sequence[SandboxRecord | SnapshotRecord], page: int, page_size: int, *, error_code: str
) -> dict[str, Any]:
    """One page of `records` as a wire list response (`items` + `pagination`); 400 on bad paging."""
    if page < 1:
        raise bad_request("page must be at least 1", error_code)
    if not 1 <= page_size <= 200:
        raise bad_request("pageSize must be between 1 and 200", error_code)
    start = (page - 1) * page_size
    total_pages = (len(records) + page_size - 1) // page_size
    return {
        "items": [r.to_wire() for r in records[start : start + page_size]],
        "pagination": {
            "page": page,
            "pageSize": page_size,
            "totalItems": len(records),
            "totalPages": total_pages,
            "hasNextPage": page < total_pages,
        },
    }


def format_quantity(amount: int) -> str:
    """Bytes as the largest exact binary quantity: 2147483648 → "2Gi", 1000 → "1000"."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if amount >= size and amount % size == 0:
            return f"{amount // size}{unit}"
    return str(amount)


@dataclass
class _Record:
    """What sandbox and snapshot records share: a stored document and a `{state, reason, ...}` status."""

    id: str
    created_at: str
    state: str
    reason: str
    message: str
    last_transition_at: str

    def to_doc(self) -> dict[str, Any]:
        """The JSON document the store keeps."""
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        """Rebuild a record from its stored document (unknown keys from newer versions ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    def set_status(self, state: str, reason: str, message: str) -> str:
        """Move to `state` now; returns the transition time as formatted on the wire."""
        at = format_time(utcnow())
        self.state, self.reason, self.message, self.last_transition_at = state, reason, message, at
        return at

    def status(self) -> dict[str, str]:
        """The wire `SandboxStatus` / `SnapshotStatus`."""
        return {
            "state": self.state,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionAt": self.last_transition_at,
        }


@dataclass
class SandboxRecord(_Record):
    """One sandbox as stored: the request it came from plus its current status."""

    entrypoint: list[str]
    image: dict[str, str] | None = None  # {"uri": ...}; registry credentials are never stored
    #: The image it runs: `image`, or for a restore the snapshot's (the wire shows `snapshotId` then).
    runs_image: dict[str, str] | None = None
    snapshot_id: str | None = None
    platform: dict[str, str] | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    expires_at: str | None = None
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    pids_max: int | None = None
    #: Cap on the sandbox's writable files (`resourceLimits["ephemeral-storage"]`).
    disk_bytes: int | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)
    extensions: dict[str, str] = field(default_factory=dict)
    #: Request fields kept verbatim (networkPolicy, secureAccess, credentialProxy, volumes).
    extras: dict[str, Any] = field(default_factory=dict)
    #: Salt of the sandbox's execd and egress tokens, which are derived from it and the server's key
    #: (`tokens.py`) and never stored. "" in a record of an older version, which stored the tokens.
    token_salt: str = ""
    #: Host file with the entrypoint's output (kept after the sandbox fails, for diagnostics).
    log_path: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The full wire `Sandbox` (GET, list, PATCH metadata)."""
        body = self.to_create_response()
        if self.image is not None:
            body["image"] = dict(self.image)
        if self.snapshot_id is not None:
            body["snapshotId"] = self.snapshot_id
        limits = self.resource_limits()
        if limits:
            body["resourceLimits"] = limits
        return body

    def resource_limits(self) -> dict[str, str]:
        """The limits applied (the request's or the server's defaults), as wire `ResourceLimits`."""
        limits: dict[str, str] = {}
        if self.cpu_cores is not None:
            millicores = round(self.cpu_cores * 1000)
            limits["cpu"] = str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"
        for key, amount in (("memory", self.memory_bytes), ("ephemeral-storage", self.disk_bytes)):
            if amount is not None:
                limits[key] = format_quantity(amount)
        if self.pids_max is not None:
            limits["pids"] = str(self.pids_max)
        return limits

    def to_create_response(self) -> dict[str, Any]:
        """The wire `CreateSandboxResponse`: no startup source."""
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status(),
            "metadata": dict(self.metadata),
            "createdAt": self.created_at,
            "entrypoint": list(self.entrypoint),
        }
        if self.platform is not None:
            body["platform"] = dict(self.platform)
        if self.expires_at is not None:
            body["expiresAt"] = self.expires_at
        return body


@dataclass
class SnapshotRecord(_Record):
    """A copy of a sandbox's private files plus what is needed to start it again."""

    sandbox_id: str
    name: str | None = None
    image: dict[str, str] | None = None  # the sandbox's {"uri": ...}; restores run it again
    entrypoint: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    pids_max: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The wire `Snapshot`."""
        body: dict[str, Any] = {
            "id": self.id,
            "sandboxId": self.sandbox_id,
            "status": self.status(),
            "createdAt": self.created_at,
        }
        if self.name is not None:
            body["name"] = self.name
        return body
