"""Models of the Diagnostics API (``diagnostic-api.yml``): descriptors of plain-text logs and events.

A descriptor either embeds the text (``delivery == "inline"``, ``content``) or points at it
(``delivery == "url"``, ``content_url`` and ``expires_at``). Kinds, deliveries and scopes are open enums.
"""

from __future__ import annotations

from pydantic import Field

from ._base import OpenStrEnum, UtcDateTime, WireModel

__all__ = [
    "DiagnosticContentResponse",
    "DiagnosticDelivery",
    "DiagnosticKind",
    "DiagnosticScope",
]


class DiagnosticKind(OpenStrEnum):
    """What a descriptor describes."""

    LOGS = "logs"
    EVENTS = "events"


class DiagnosticDelivery(OpenStrEnum):
    """How the diagnostic text is delivered."""

    INLINE = "inline"
    URL = "url"


class DiagnosticScope(OpenStrEnum):
    """Known values of the required ``scope`` query parameter; servers may support others."""

    CONTAINER = "container"
    LIFECYCLE = "lifecycle"
    RUNTIME = "runtime"
    NETWORK = "network"
    PROCESS = "process"
    ALL = "all"


class DiagnosticContentResponse(WireModel):
    """Answer of ``GET /sandboxes/{id}/diagnostics/logs|events?scope=``."""

    sandbox_id: str
    kind: DiagnosticKind
    scope: str
    delivery: DiagnosticDelivery
    content_type: str
    content: str | None = None
    content_url: str | None = None
    content_length: int | None = Field(default=None, ge=0)
    expires_at: UtcDateTime | None = None
    truncated: bool
    warnings: list[str] | None = None
