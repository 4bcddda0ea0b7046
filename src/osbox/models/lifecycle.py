"""Models of the Sandbox Lifecycle API (``sandbox-lifecycle.yml``): sandboxes, snapshots, endpoints.

All wire names are camelCase. ``SandboxState`` and ``SnapshotState`` are open enums (unknown states validate);
``PlatformSpec`` and network rule actions are closed vocabularies (``Literal``) as in the spec. Secrets (the
registry password, OSS access key secret, endpoint header tokens, environment values) are kept out of
``repr``; ``to_wire()`` still sends them.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import Field, model_validator

from ._base import OpenStrEnum, RequestModel, UtcDateTime, WireModel, WireRootModel

__all__ = [
    "OSSFS",
    "PVC",
    "CreateSandboxRequest",
    "CreateSandboxResponse",
    "CreateSnapshotRequest",
    "CredentialProxyConfig",
    "Endpoint",
    "Host",
    "ImageAuth",
    "ImageSpec",
    "ListSandboxesResponse",
    "ListSnapshotsResponse",
    "NetworkAction",
    "NetworkPolicy",
    "NetworkRule",
    "PaginationInfo",
    "PatchSandboxMetadataRequest",
    "PlatformSpec",
    "RenewSandboxExpirationRequest",
    "RenewSandboxExpirationResponse",
    "ResourceLimits",
    "Sandbox",
    "SandboxState",
    "SandboxStatus",
    "Snapshot",
    "SnapshotState",
    "SnapshotStatus",
    "Volume",
]

POOL_REF_EXTENSION = "poolRef"
"""The ``extensions`` key that selects pool mode, where ``image``/``entrypoint`` become optional."""

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

ResourceLimits: TypeAlias = dict[str, str]
"""Kubernetes-style resource limits, e.g. ``{"cpu": "500m", "memory": "512Mi"}``."""

NetworkAction: TypeAlias = Literal["allow", "deny"]


class SandboxState(OpenStrEnum):
    """Lifecycle state of a sandbox. Open: values a newer server adds still validate."""

    PENDING = "Pending"
    RUNNING = "Running"
    PAUSING = "Pausing"
    PAUSED = "Paused"
    RESUMING = "Resuming"
    STOPPING = "Stopping"
    TERMINATED = "Terminated"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class SnapshotState(OpenStrEnum):
    """Lifecycle state of a snapshot. Open: values a newer server adds still validate."""

    CREATING = "Creating"
    DELETING = "Deleting"
    READY = "Ready"
    FAILED = "Failed"


class SandboxStatus(WireModel):
    """A sandbox's state with the reason and time of its last transition."""

    state: SandboxState
    reason: str | None = None
    message: str | None = None
    last_transition_at: UtcDateTime | None = None


class SnapshotStatus(WireModel):
    """A snapshot's state with the reason and time of its last transition."""

    state: SnapshotState
    reason: str | None = None
    message: str | None = None
    last_transition_at: UtcDateTime | None = None


class ImageAuth(WireModel):
    """Registry credentials; the password never appears in ``repr``."""

    username: str | None = None
    password: str | None = Field(default=None, repr=False)


class ImageSpec(WireModel):
    """The container image to provision from, with optional registry credentials."""

    uri: str
    auth: ImageAuth | None = None


class PlatformSpec(WireModel):
    """Target OS and CPU architecture constraint."""

    os: Literal["linux", "windows"]
    arch: Literal["amd64", "arm64"]


class NetworkRule(WireModel):
    """One egress rule: allow or deny a domain (``*.example.com`` matches subdomains, not the apex)."""

    action: NetworkAction
    target: str


class NetworkPolicy(WireModel):
    """Egress policy: ``egress`` rules evaluated in order, then ``default_action``.

    Shared by the lifecycle create request and the egress sidecar's ``/policy``.
    """

    default_action: NetworkAction | None = None
    egress: list[NetworkRule] | None = None


class CredentialProxyConfig(WireModel):
    """Credential Vault proxy start-up settings (opt-in transparent MITM for credential injection)."""

    enabled: bool = False


class Host(WireModel):
    """Host path bind-mount volume backend."""

    path: str = Field(pattern=r"^(/|[A-Za-z]:[\\/])")


class PVC(WireModel):
    """Platform-managed named volume backend (a Kubernetes PVC or a Docker named volume)."""

    claim_name: str = Field(pattern=_DNS_LABEL, max_length=253)
    create_if_not_exists: bool = True
    delete_on_sandbox_termination: bool = False
    storage_class: str | None = None
    storage: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei)?$")
    access_modes: list[str] | None = None


class OSSFS(WireModel):
    """Alibaba Cloud OSS volume backend; the access key secret never appears in ``repr``."""

    bucket: str = Field(min_length=3, max_length=63)
    endpoint: str = Field(min_length=1)
    version: Literal["1.0", "2.0"] = "2.0"
    options: list[str] | None = None
    access_key_id: str = Field(min_length=1)
    access_key_secret: str = Field(min_length=1, repr=False)


_VOLUME_BACKENDS = ("host", "pvc", "ossfs")


class Volume(WireModel):
    """A storage mount: exactly one backend (``host``, ``pvc`` or ``ossfs``) plus mount settings.

    A backend osbox does not know arrives as an extra field; a volume carrying only such a field is accepted.
    """

    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    host: Host | None = None
    pvc: PVC | None = None
    ossfs: OSSFS | None = None
    mount_path: str = Field(pattern=r"^/")
    read_only: bool = False
    sub_path: str | None = None

    @model_validator(mode="after")
    def _one_backend(self) -> Volume:
        given = [name for name in _VOLUME_BACKENDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"volume {self.name!r}: exactly one backend allowed, got {', '.join(given)}")
        if not given and not self.model_extra:
            raise ValueError(f"volume {self.name!r}: one backend (host, pvc or ossfs) is required")
        return self


class CreateSandboxRequest(RequestModel):
    """Body of ``POST /sandboxes``.

    Exactly one of ``image`` or ``snapshot_id`` (unless ``extensions["poolRef"]`` selects pool mode);
    ``entrypoint`` is required with ``image``. ``timeout`` is seconds (≥ 60); leave it unset or set it to
    ``None`` for a sandbox that never expires — unset omits it, ``None`` sends ``null``. Environment values
    may be secrets and stay out of ``repr``.

    Example::

        CreateSandboxRequest(image=ImageSpec(uri="python:3.11"), entrypoint=["sleep", "infinity"],
                             timeout=600, resource_limits={"cpu": "1", "memory": "1Gi"})
    """

    image: ImageSpec | None = None
    snapshot_id: str | None = None
    platform: PlatformSpec | None = None
    timeout: int | None = Field(default=None, ge=60)
    resource_limits: ResourceLimits | None = None
    env: dict[str, str] | None = Field(default=None, repr=False)
    metadata: dict[str, str] | None = None
    entrypoint: list[str] | None = Field(default=None, min_length=1)
    network_policy: NetworkPolicy | None = None
    credential_proxy: CredentialProxyConfig | None = None
    secure_access: bool = False
    volumes: list[Volume] | None = None
    extensions: dict[str, str] | None = None

    @model_validator(mode="after")
    def _source(self) -> CreateSandboxRequest:
        pool_mode = bool(self.extensions and self.extensions.get(POOL_REF_EXTENSION))
        if self.image is not None and self.snapshot_id is not None:
            raise ValueError("give either image or snapshotId, not both")
        if pool_mode and self.snapshot_id is not None:
            raise ValueError("snapshotId cannot be combined with extensions.poolRef")
        if not pool_mode and self.image is None and self.snapshot_id is None:
            raise ValueError("one of image or snapshotId is required")
        if not pool_mode and self.image is not None and not self.entrypoint:
            raise ValueError("entrypoint is required when image is given")
        return self


class _SandboxBase(WireModel):
    """Fields shared by a created sandbox and a fetched one."""

    id: str
    status: SandboxStatus
    metadata: dict[str, str] | None = None
    platform: PlatformSpec | None = None
    entrypoint: list[str] = Field(default_factory=list)
    expires_at: UtcDateTime | None = None
    created_at: UtcDateTime


class CreateSandboxResponse(_SandboxBase):
    """The 202 answer to ``POST /sandboxes``. ``expires_at`` is absent for a sandbox that never expires."""


class Sandbox(_SandboxBase):
    """A sandbox as ``GET /sandboxes/{id}`` and the list return it."""

    image: ImageSpec | None = None
    snapshot_id: str | None = None


class PaginationInfo(WireModel):
    """Pagination of a list response."""

    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    total_items: int = Field(ge=0)
    total_pages: int = Field(ge=0)
    has_next_page: bool


class ListSandboxesResponse(WireModel):
    """One page of ``GET /sandboxes``."""

    items: list[Sandbox]
    pagination: PaginationInfo


class CreateSnapshotRequest(RequestModel):
    """Body of ``POST /sandboxes/{id}/snapshots``."""

    name: str | None = Field(default=None, min_length=1)


class Snapshot(WireModel):
    """A point-in-time capture of a sandbox."""

    id: str
    sandbox_id: str
    name: str | None = None
    status: SnapshotStatus
    created_at: UtcDateTime


class ListSnapshotsResponse(WireModel):
    """One page of ``GET /snapshots``."""

    items: list[Snapshot]
    pagination: PaginationInfo


class PatchSandboxMetadataRequest(WireRootModel[dict[str, str | None]]):
    """JSON merge patch of sandbox metadata: a string adds or replaces a key, ``None`` deletes it."""


class RenewSandboxExpirationRequest(RequestModel):
    """Body of ``POST /sandboxes/{id}/renew-expiration``: the new absolute expiry."""

    expires_at: UtcDateTime


class RenewSandboxExpirationResponse(WireModel):
    """The expiry now in force."""

    expires_at: UtcDateTime


class Endpoint(WireModel):
    """Where to reach a sandbox port: ``endpoint`` is ``host[:port][/path]`` with no scheme.

    ``headers`` must be sent with every request to it; they carry access tokens and stay out of ``repr``.
    """

    endpoint: str
    headers: dict[str, str] | None = Field(default=None, repr=False)
