"""The Sandbox Lifecycle API's pieces that do no I/O: where the server is, query encodings, shared requests.

The client is `AsyncLifecycleClient` (`osbox._async.lifecycle`) and its generated twin `LifecycleClient`
(`osbox._sync.lifecycle`); the requests more than one of their methods send are built here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from ._operation import APIRequest, model, path
from .models import ListSandboxesResponse, ListSnapshotsResponse
from .models.diagnostic import DiagnosticContentResponse

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DOMAIN_ENV",
    "diagnostic_request",
    "encode_metadata_filter",
    "list_sandboxes_request",
    "list_snapshots_request",
    "resolve_base_url",
]

#: Environment variable holding the lifecycle API key.
API_KEY_ENV = "OPEN_SANDBOX_API_KEY"
#: Environment variable holding the lifecycle server's `host:port` (or a full URL).
DOMAIN_ENV = "OPEN_SANDBOX_DOMAIN"
DEFAULT_BASE_URL = "http://localhost:8080/v1"

#: Anything that names one or several states: "Running", SandboxState.RUNNING, ["Running", "Paused"].
States = str | Iterable[str] | None


def resolve_base_url(base_url: str | None) -> str:
    """`base_url`, else `$OPEN_SANDBOX_DOMAIN` (`host:port` → `http://host:port/v1`), else the default."""
    if base_url:
        return base_url
    domain = os.environ.get(DOMAIN_ENV, "").strip()
    if not domain:
        return DEFAULT_BASE_URL
    if "://" in domain:
        return domain  # a full URL is the user's choice, kept as given
    return f"http://{domain.rstrip('/')}/v1"


def encode_metadata_filter(metadata: Mapping[str, str]) -> str:
    """The `metadata` query value: `k=v&k2=v2`, keys and values percent-encoded.

    The query builder then encodes this string once more, so `{"env": "prod"}` travels as
    `metadata=env%3Dprod`, the form the reference server decodes.
    """
    return urlencode(dict(metadata), quote_via=quote)


def _states(state: States) -> list[str]:
    if state is None:
        return []
    if isinstance(state, str):
        return [state]
    return [str(s) for s in state]


def _epoch_seconds(expires: datetime | timedelta | int) -> str:
    """A signed-route expiry as the decimal Unix seconds the spec asks for."""
    if isinstance(expires, timedelta):
        expires = datetime.now(UTC) + expires
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return str(int(expires.timestamp()))
    if isinstance(expires, bool) or expires < 0:
        raise ValueError(f"expires must be a datetime, a timedelta or Unix seconds >= 0, got {expires!r}")
    return str(int(expires))


def _page_params(page: int | None, page_size: int | None) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = []
    if page is not None:
        params.append(("page", page))
    if page_size is not None:
        params.append(("pageSize", page_size))
    return params


def _has_next(result: ListSandboxesResponse | ListSnapshotsResponse) -> bool:
    # An empty page that claims more would loop forever: stop there.
    return result.pagination.has_next_page and bool(result.items)


def list_sandboxes_request(
    state: States, metadata: Mapping[str, str] | None, page: int | None, page_size: int | None
) -> APIRequest[ListSandboxesResponse]:
    """`GET /sandboxes`: one page, filtered (`list_sandboxes`, and each page of `iter_sandboxes`)."""
    params: list[tuple[str, Any]] = [("state", s) for s in _states(state)]
    if metadata:
        params.append(("metadata", encode_metadata_filter(metadata)))
    params += _page_params(page, page_size)
    return APIRequest("GET", "/sandboxes", params=params, parse=model(ListSandboxesResponse))


def list_snapshots_request(
    sandbox_id: str | None, state: States, page: int | None, page_size: int | None
) -> APIRequest[ListSnapshotsResponse]:
    """`GET /snapshots`: one page, filtered (`list_snapshots`, and each page of `iter_snapshots`)."""
    params: list[tuple[str, Any]] = []
    if sandbox_id is not None:
        params.append(("sandboxId", sandbox_id))
    params += [("state", s) for s in _states(state)]
    params += _page_params(page, page_size)
    return APIRequest("GET", "/snapshots", params=params, parse=model(ListSnapshotsResponse))


def diagnostic_request(sandbox_id: str, kind: str, scope: str) -> APIRequest[DiagnosticContentResponse]:
    """`GET /sandboxes/{id}/diagnostics/{kind}` (`logs` or `events`) for `scope`."""
    if not scope:
        raise ValueError("scope is required, e.g. 'all', 'container' or 'lifecycle'")
    return APIRequest(
        "GET",
        path("/sandboxes/{id}/diagnostics/" + kind, id=sandbox_id),
        params={"scope": str(scope)},
        parse=model(DiagnosticContentResponse),
    )
