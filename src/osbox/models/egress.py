"""Models of the egress sidecar API (``egress-api.yaml``): runtime network policy and the Credential Vault.

Wire names are camelCase. ``NetworkPolicy`` and ``NetworkRule`` are shared with the lifecycle create request
and defined in :mod:`osbox.models.lifecycle`. Inline credential values are write-only secrets: they never
appear in ``repr`` or validation errors, and ``to_wire()`` sends them. Auth variants of a binding form the
discriminated union :data:`CredentialAuth` (on ``type``); their ``type`` is always sent.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import Field

from ._base import OpenStrEnum, RequestModel, WireModel, WireRootModel
from .lifecycle import NetworkPolicy, NetworkRule

__all__ = [
    "ApiKeyCredentialAuth",
    "BasicCredentialAuth",
    "BearerCredentialAuth",
    "Credential",
    "CredentialAuth",
    "CredentialAuthMetadata",
    "CredentialBinding",
    "CredentialBindingListResponse",
    "CredentialBindingMetadata",
    "CredentialBindingMutationSet",
    "CredentialListResponse",
    "CredentialMatch",
    "CredentialMetadata",
    "CredentialMutationSet",
    "CredentialVaultCreateRequest",
    "CredentialVaultMutationRequest",
    "CredentialVaultState",
    "CustomHeaderEntry",
    "CustomHeadersCredentialAuth",
    "DeletePolicyRulesRequest",
    "EgressMode",
    "EnforcementMode",
    "InlineCredentialSource",
    "NetworkPolicy",
    "NetworkRule",
    "PatchPolicyRulesRequest",
    "PolicyStatusResponse",
]

CredentialScheme: TypeAlias = Literal["https", "http"]

_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"


class EgressMode(OpenStrEnum):
    """The sidecar's derived policy mode."""

    ALLOW_ALL = "allow_all"
    DENY_ALL = "deny_all"
    ENFORCING = "enforcing"


class EnforcementMode(OpenStrEnum):
    """How the sidecar enforces the policy: DNS answers only, or DNS plus an nftables filter."""

    DNS = "dns"
    DNS_NFT = "dns+nft"


class PolicyStatusResponse(WireModel):
    """Answer of ``GET``, ``PATCH`` and ``DELETE /policy``; ``reason`` explains e.g. a no-op delete."""

    status: str | None = None
    mode: EgressMode | None = None
    enforcement_mode: EnforcementMode | None = None
    reason: str | None = None
    policy: NetworkPolicy | None = None


class PatchPolicyRulesRequest(WireRootModel[Annotated[list[NetworkRule], Field(min_length=1)]]):
    """Body of ``PATCH /policy``: rules merged ahead of the current ones (first rule per target wins)."""


class DeletePolicyRulesRequest(WireRootModel[Annotated[list[str], Field(min_length=1)]]):
    """Body of ``DELETE /policy``: the targets whose rules to remove."""


# --- Credential Vault --------------------------------------------------------------------------------------


class InlineCredentialSource(WireModel):
    """A credential value given inline. Write-only: hidden from ``repr`` and from validation errors."""

    _always_sent: ClassVar[tuple[str, ...]] = ("type",)

    type: Literal["inline"] = "inline"
    value: str = Field(repr=False)


class Credential(WireModel):
    """A named secret held by the vault."""

    name: str
    source: InlineCredentialSource


def _default_schemes() -> list[CredentialScheme]:
    return ["https"]


class CredentialMatch(WireModel):
    """Which requests a binding applies to; unset lists take the spec defaults server-side."""

    schemes: list[CredentialScheme] = Field(default_factory=_default_schemes)
    ports: list[int] = Field(default_factory=lambda: [443])
    hosts: list[str]
    methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"])
    paths: list[str] = Field(default_factory=lambda: ["/*"])


class BearerCredentialAuth(WireModel):
    """Inject ``Authorization: Bearer <credential>``; ``credential`` names a vault credential."""

    _always_sent: ClassVar[tuple[str, ...]] = ("type",)

    type: Literal["bearer"] = "bearer"
    credential: str


class BasicCredentialAuth(WireModel):
    """Inject ``Authorization: Basic <credential>`` (the credential holds base64 ``user:password``)."""

    _always_sent: ClassVar[tuple[str, ...]] = ("type",)

    type: Literal["basic"] = "basic"
    credential: str


class ApiKeyCredentialAuth(WireModel):
    """Inject the credential in the header ``name``."""

    _always_sent: ClassVar[tuple[str, ...]] = ("type",)

    type: Literal["apiKey"] = "apiKey"
    name: str = Field(pattern=_HEADER_NAME)
    credential: str


class CustomHeaderEntry(WireModel):
    """One header of a custom-headers binding: header ``name`` gets the named credential."""

    name: str = Field(pattern=_HEADER_NAME)
    credential: str


class CustomHeadersCredentialAuth(WireModel):
    """Inject several headers, each from a credential."""

    _always_sent: ClassVar[tuple[str, ...]] = ("type",)

    type: Literal["customHeaders"] = "customHeaders"
    headers: list[CustomHeaderEntry] = Field(min_length=1)


CredentialAuth: TypeAlias = Annotated[
    BearerCredentialAuth | BasicCredentialAuth | ApiKeyCredentialAuth | CustomHeadersCredentialAuth,
    Field(discriminator="type"),
]
"""How a binding injects its credential, chosen by ``type``."""


class CredentialBinding(WireModel):
    """Binds matching requests to an auth injection."""

    name: str
    match: CredentialMatch
    auth: CredentialAuth


class CredentialMutationSet(WireModel):
    """Credential changes of a vault ``PATCH``: add, replace, delete (by name)."""

    add: list[Credential] | None = None
    replace: list[Credential] | None = None
    delete: list[str] | None = None


class CredentialBindingMutationSet(WireModel):
    """Binding changes of a vault ``PATCH``: add, replace, delete (by name)."""

    add: list[CredentialBinding] | None = None
    replace: list[CredentialBinding] | None = None
    delete: list[str] | None = None


class CredentialVaultCreateRequest(RequestModel):
    """Body of ``POST /credential-vault``."""

    credentials: list[Credential]
    bindings: list[CredentialBinding]


class CredentialVaultMutationRequest(RequestModel):
    """Body of ``PATCH /credential-vault``; ``expected_revision`` guards against concurrent changes."""

    expected_revision: int | None = None
    credentials: CredentialMutationSet | None = None
    bindings: CredentialBindingMutationSet | None = None


class CredentialMetadata(WireModel):
    """Sanitized description of a stored credential (never its value)."""

    name: str
    source_type: str
    revision: int


class CredentialAuthMetadata(WireModel):
    """Sanitized description of a binding's auth: its type and, for ``apiKey``, the header name."""

    type: str
    name: str | None = None


class CredentialBindingMetadata(WireModel):
    """Sanitized description of a binding."""

    name: str
    revision: int
    match: CredentialMatch | None = None
    auth: CredentialAuthMetadata | None = None


class CredentialVaultState(WireModel):
    """Sanitized vault state returned by create, get and patch."""

    revision: int
    credentials: list[CredentialMetadata]
    bindings: list[CredentialBindingMetadata]


class CredentialListResponse(WireModel):
    """Answer of ``GET /credential-vault/credentials``."""

    revision: int
    credentials: list[CredentialMetadata]


class CredentialBindingListResponse(WireModel):
    """Answer of ``GET /credential-vault/bindings``."""

    revision: int
    bindings: list[CredentialBindingMetadata]
