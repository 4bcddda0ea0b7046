"""The Sandbox Lifecycle API client (`sandbox-lifecycle.yml` and `diagnostic-api.yml`).

Every operation is defined once in `LifecycleOperations`; `LifecycleClient` sends it with a blocking
connection pool, `AsyncLifecycleClient` with an asyncio one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Unpack
from urllib.parse import quote, urlencode

from ._async.client import AsyncAPIClient
from ._base_client import NOT_GIVEN, BaseClient, ClientOptions
from ._operation import APIRequest, PageRequest, given, model, no_content, operation, paginated, path
from ._sync.client import SyncAPIClient
from .models import (
    CreateSandboxRequest,
    CreateSandboxResponse,
    CreateSnapshotRequest,
    CredentialProxyConfig,
    Endpoint,
    ImageSpec,
    ListSandboxesResponse,
    ListSnapshotsResponse,
    NetworkPolicy,
    PatchSandboxMetadataRequest,
    PlatformSpec,
    RenewSandboxExpirationRequest,
    RenewSandboxExpirationResponse,
    Sandbox,
    Snapshot,
    Volume,
)
from .models.diagnostic import DiagnosticContentResponse

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DOMAIN_ENV",
    "AsyncLifecycleClient",
    "LifecycleClient",
    "LifecycleOperations",
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


class LifecycleOperations(BaseClient):
    """The lifecycle and diagnostics operations, shared by `LifecycleClient` and `AsyncLifecycleClient`."""

    _auth_header: ClassVar[str] = "OPEN-SANDBOX-API-KEY"

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        """`base_url` falls back to `$OPEN_SANDBOX_DOMAIN`, `api_key` to `$OPEN_SANDBOX_API_KEY`.

        Options: `timeout`, `max_retries`, `headers`, `http_client` (see `BaseClient`).
        """
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV) or None
        super().__init__(resolve_base_url(base_url), api_key, **options)

    # -- sandboxes ---------------------------------------------------------------------------------

    @operation
    def create_sandbox(
        self,
        request: CreateSandboxRequest | None = None,
        *,
        image: str | ImageSpec | None = None,
        entrypoint: Sequence[str] | None = None,
        timeout: int | None = NOT_GIVEN,
        resource_limits: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        network_policy: NetworkPolicy | Mapping[str, Any] | None = None,
        volumes: Sequence[Volume | Mapping[str, Any]] | None = None,
        extensions: Mapping[str, str] | None = None,
        platform: PlatformSpec | Mapping[str, str] | None = None,
        secure_access: bool | None = None,
        credential_proxy: CredentialProxyConfig | Mapping[str, Any] | None = None,
        snapshot_id: str | None = None,
    ) -> APIRequest[CreateSandboxResponse]:
        """Create a sandbox from an image, or restore one from a snapshot (`POST /sandboxes`).

        Pass keyword arguments, or a ready `CreateSandboxRequest`. `timeout` is the lifetime in
        seconds (>= 60); `timeout=None` sends `null` (never expires); leaving it out omits it (the
        server's default applies). Arguments left at `None` are not sent.

            sandbox = client.create_sandbox(image="python:3.11", entrypoint=["sleep", "infinity"],
                                            timeout=600, resource_limits={"cpu": "1", "memory": "1Gi"})
            restored = client.create_sandbox(snapshot_id=snapshot.id)
        """
        fields = given(
            image=ImageSpec(uri=image) if isinstance(image, str) else image,
            entrypoint=list(entrypoint) if entrypoint is not None else None,
            resource_limits=resource_limits,
            env=env,
            metadata=metadata,
            network_policy=network_policy,
            volumes=list(volumes) if volumes is not None else None,
            extensions=extensions,
            platform=platform,
            secure_access=secure_access,
            credential_proxy=credential_proxy,
            snapshot_id=snapshot_id,
        )
        if timeout is not NOT_GIVEN:
            fields["timeout"] = timeout
        if request is not None:
            if fields:
                raise TypeError(
                    f"create_sandbox: pass a CreateSandboxRequest or keyword arguments, not both "
                    f"(got {', '.join(sorted(fields))})"
                )
        else:
            request = CreateSandboxRequest.model_validate(fields)
        return APIRequest("POST", "/sandboxes", json=request.to_wire(), parse=model(CreateSandboxResponse))

    @operation
    def get_sandbox(self, sandbox_id: str) -> APIRequest[Sandbox]:
        """The sandbox with this id (`GET /sandboxes/{id}`); `NotFoundError` if there is none."""
        return APIRequest("GET", path("/sandboxes/{id}", id=sandbox_id), parse=model(Sandbox))

    @operation
    def list_sandboxes(
        self,
        *,
        state: States = None,
        metadata: Mapping[str, str] | None = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> APIRequest[ListSandboxesResponse]:
        """One page of sandboxes (`GET /sandboxes`), newest first.

        `state` is one state or several (OR); `metadata` keeps sandboxes carrying every pair (AND).

            page = client.list_sandboxes(state=["Running", "Paused"], metadata={"env": "prod"})
            print(page.pagination.total_items, [s.id for s in page.items])
        """
        params: list[tuple[str, Any]] = [("state", s) for s in _states(state)]
        if metadata:
            params.append(("metadata", encode_metadata_filter(metadata)))
        params += _page_params(page, page_size)
        return APIRequest("GET", "/sandboxes", params=params, parse=model(ListSandboxesResponse))

    @paginated
    def iter_sandboxes(
        self,
        *,
        state: States = None,
        metadata: Mapping[str, str] | None = None,
        page_size: int | None = None,
    ) -> PageRequest[Sandbox]:
        """Every sandbox matching the filters, fetching page after page as iteration goes on.

        for sandbox in client.iter_sandboxes(state="Running"):
            print(sandbox.id)
        """
        states = _states(state)

        def page(number: int) -> APIRequest[ListSandboxesResponse]:
            return LifecycleOperations.list_sandboxes.build(
                self, state=states, metadata=metadata, page=number, page_size=page_size
            )

        return PageRequest(page=page, items=lambda result: result.items, has_next=_has_next)

    @operation
    def delete_sandbox(self, sandbox_id: str) -> APIRequest[None]:
        """Terminate and remove a sandbox (`DELETE /sandboxes/{id}`, 204)."""
        return APIRequest("DELETE", path("/sandboxes/{id}", id=sandbox_id), parse=no_content)

    @operation
    def pause_sandbox(self, sandbox_id: str) -> APIRequest[None]:
        """Ask a running sandbox to pause (202); poll `get_sandbox` until it is `Paused`."""
        return APIRequest("POST", path("/sandboxes/{id}/pause", id=sandbox_id), parse=no_content)

    @operation
    def resume_sandbox(self, sandbox_id: str) -> APIRequest[None]:
        """Ask a paused sandbox to resume (202); poll `get_sandbox` until it is `Running`."""
        return APIRequest("POST", path("/sandboxes/{id}/resume", id=sandbox_id), parse=no_content)

    @operation
    def renew_expiration(
        self, sandbox_id: str, expires_at: datetime | timedelta
    ) -> APIRequest[RenewSandboxExpirationResponse]:
        """Move the sandbox's expiry to `expires_at` (a datetime, or a timedelta from now).

        client.renew_expiration(sandbox.id, timedelta(minutes=30))
        """
        if isinstance(expires_at, timedelta):
            expires_at = datetime.now(UTC) + expires_at
        body = RenewSandboxExpirationRequest(expires_at=expires_at).to_wire()
        return APIRequest(
            "POST",
            path("/sandboxes/{id}/renew-expiration", id=sandbox_id),
            json=body,
            parse=model(RenewSandboxExpirationResponse),
        )

    @operation
    def get_endpoint(
        self,
        sandbox_id: str,
        port: int,
        *,
        use_server_proxy: bool = False,
        expires: datetime | timedelta | int | None = None,
    ) -> APIRequest[Endpoint]:
        """Where to reach `port` inside the sandbox (`GET /sandboxes/{id}/endpoints/{port}`).

        `use_server_proxy=True` asks for a route through the lifecycle server; `expires` (a datetime,
        a timedelta from now, or Unix seconds) asks for a signed route valid until then. The spec
        forbids combining the two. Hand the result to `ExecdClient.from_endpoint` /
        `EgressClient.from_endpoint`.

            endpoint = client.get_endpoint(sandbox.id, 44772)
        """
        if use_server_proxy and expires is not None:
            raise ValueError("use_server_proxy=True cannot be combined with expires (signed endpoints)")
        if isinstance(port, bool) or not 1 <= int(port) <= 65535:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        params: list[tuple[str, str]] = []
        if use_server_proxy:
            params.append(("use_server_proxy", "true"))
        if expires is not None:
            params.append(("expires", _epoch_seconds(expires)))
        return APIRequest(
            "GET",
            path("/sandboxes/{id}/endpoints/{port}", id=sandbox_id, port=int(port)),
            params=params,
            parse=model(Endpoint),
        )

    @operation
    def get_signed_endpoint(
        self, sandbox_id: str, port: int, expires: datetime | timedelta | int
    ) -> APIRequest[Endpoint]:
        """A signed access route to `port`, valid until `expires` (OSEP-0011; `?expires=` seconds).

        endpoint = client.get_signed_endpoint(sandbox.id, 8000, timedelta(hours=1))
        """
        return LifecycleOperations.get_endpoint.build(self, sandbox_id, port, expires=expires)

    @operation
    def patch_metadata(self, sandbox_id: str, patch: Mapping[str, str | None]) -> APIRequest[Sandbox]:
        """Merge-patch the sandbox's metadata: a string sets a key, `None` deletes it.

        client.patch_metadata(sandbox.id, {"team": "infra", "obsolete": None})
        """
        body = PatchSandboxMetadataRequest.model_validate(dict(patch)).to_wire()
        return APIRequest(
            "PATCH", path("/sandboxes/{id}/metadata", id=sandbox_id), json=body, parse=model(Sandbox)
        )

    # -- snapshots ---------------------------------------------------------------------------------

    @operation
    def create_snapshot(self, sandbox_id: str, *, name: str | None = None) -> APIRequest[Snapshot]:
        """Start capturing a running sandbox (202, state `Creating`); poll `get_snapshot` for `Ready`."""
        body = CreateSnapshotRequest(name=name).to_wire() if name is not None else {}
        return APIRequest(
            "POST", path("/sandboxes/{id}/snapshots", id=sandbox_id), json=body, parse=model(Snapshot)
        )

    @operation
    def get_snapshot(self, snapshot_id: str) -> APIRequest[Snapshot]:
        """The snapshot with this id (`GET /snapshots/{id}`)."""
        return APIRequest("GET", path("/snapshots/{id}", id=snapshot_id), parse=model(Snapshot))

    @operation
    def list_snapshots(
        self,
        *,
        sandbox_id: str | None = None,
        state: States = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> APIRequest[ListSnapshotsResponse]:
        """One page of snapshots (`GET /snapshots`), optionally of one sandbox and in some states."""
        params: list[tuple[str, Any]] = []
        if sandbox_id is not None:
            params.append(("sandboxId", sandbox_id))
        params += [("state", s) for s in _states(state)]
        params += _page_params(page, page_size)
        return APIRequest("GET", "/snapshots", params=params, parse=model(ListSnapshotsResponse))

    @paginated
    def iter_snapshots(
        self, *, sandbox_id: str | None = None, state: States = None, page_size: int | None = None
    ) -> PageRequest[Snapshot]:
        """Every snapshot matching the filters, page after page."""
        states = _states(state)

        def page(number: int) -> APIRequest[ListSnapshotsResponse]:
            return LifecycleOperations.list_snapshots.build(
                self, sandbox_id=sandbox_id, state=states, page=number, page_size=page_size
            )

        return PageRequest(page=page, items=lambda result: result.items, has_next=_has_next)

    @operation
    def delete_snapshot(self, snapshot_id: str) -> APIRequest[None]:
        """Delete a snapshot (`DELETE /snapshots/{id}`)."""
        return APIRequest("DELETE", path("/snapshots/{id}", id=snapshot_id), parse=no_content)

    # -- diagnostics -------------------------------------------------------------------------------

    @operation
    def get_diagnostic_logs(
        self, sandbox_id: str, scope: str = "all"
    ) -> APIRequest[DiagnosticContentResponse]:
        """A descriptor of the sandbox's diagnostic log text for `scope` (inline or by URL)."""
        return self._diagnostic(sandbox_id, "logs", scope)

    @operation
    def get_diagnostic_events(
        self, sandbox_id: str, scope: str = "all"
    ) -> APIRequest[DiagnosticContentResponse]:
        """A descriptor of the sandbox's diagnostic event text for `scope` (inline or by URL)."""
        return self._diagnostic(sandbox_id, "events", scope)

    @staticmethod
    def _diagnostic(sandbox_id: str, kind: str, scope: str) -> APIRequest[DiagnosticContentResponse]:
        if not scope:
            raise ValueError("scope is required, e.g. 'all', 'container' or 'lifecycle'")
        return APIRequest(
            "GET",
            path("/sandboxes/{id}/diagnostics/" + kind, id=sandbox_id),
            params={"scope": str(scope)},
            parse=model(DiagnosticContentResponse),
        )


class LifecycleClient(LifecycleOperations, SyncAPIClient):
    """Blocking client of the Sandbox Lifecycle API.

    from osbox import LifecycleClient

    with LifecycleClient("http://127.0.0.1:8080/v1", api_key="...") as client:
        sandbox = client.create_sandbox(image="python:3.11", entrypoint=["sleep", "infinity"])
        endpoint = client.get_endpoint(sandbox.id, 44772)
        client.delete_sandbox(sandbox.id)
    """


class AsyncLifecycleClient(LifecycleOperations, AsyncAPIClient):
    """Asyncio client of the Sandbox Lifecycle API; same operations as `LifecycleClient`, awaited.

    async with AsyncLifecycleClient() as client:   # $OPEN_SANDBOX_DOMAIN, $OPEN_SANDBOX_API_KEY
        sandbox = await client.create_sandbox(image="python:3.11", entrypoint=["sleep", "inf"])
        async for s in client.iter_sandboxes(state="Running"):
            print(s.id)
    """
