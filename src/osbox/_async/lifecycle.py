"""`AsyncLifecycleClient`: the Sandbox Lifecycle API (`sandbox-lifecycle.yml`, `diagnostic-api.yml`).

Each method builds its request as data (`APIRequest`: method, path, query, body, how to read the answer)
and sends it with `_call`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Unpack

from .._base_client import NOT_GIVEN, ClientOptions
from .._lifecycle import (
    API_KEY_ENV,
    States,
    _epoch_seconds,
    _has_next,
    _states,
    diagnostic_request,
    list_sandboxes_request,
    list_snapshots_request,
    resolve_base_url,
)
from .._operation import APIRequest, PageRequest, given, model, no_content, path
from ..models import (
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
from ..models.diagnostic import DiagnosticContentResponse
from .client import AsyncAPIClient

__all__ = ["AsyncLifecycleClient"]


class AsyncLifecycleClient(AsyncAPIClient):
    """Client of the Sandbox Lifecycle API: sandboxes, endpoints, snapshots, diagnostics.

    from osbox import AsyncLifecycleClient

    async with AsyncLifecycleClient("http://127.0.0.1:8080/v1", api_key="...") as client:
        sandbox = await client.create_sandbox(image="python:3.11", entrypoint=["sleep", "infinity"])
        endpoint = await client.get_endpoint(sandbox.id, 44772)
        async for s in client.iter_sandboxes(state="Running"):
            print(s.id)
        await client.delete_sandbox(sandbox.id)

    Without arguments it reads `$OPEN_SANDBOX_DOMAIN` and `$OPEN_SANDBOX_API_KEY`.
    """

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

    async def create_sandbox(
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
    ) -> CreateSandboxResponse:
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
        return await self._call(
            APIRequest("POST", "/sandboxes", json=request.to_wire(), parse=model(CreateSandboxResponse))
        )

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """The sandbox with this id (`GET /sandboxes/{id}`); `NotFoundError` if there is none."""
        return await self._call(
            APIRequest("GET", path("/sandboxes/{id}", id=sandbox_id), parse=model(Sandbox))
        )

    async def list_sandboxes(
        self,
        *,
        state: States = None,
        metadata: Mapping[str, str] | None = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> ListSandboxesResponse:
        """One page of sandboxes (`GET /sandboxes`), newest first.

        `state` is one state or several (OR); `metadata` keeps sandboxes carrying every pair (AND).

            page = client.list_sandboxes(state=["Running", "Paused"], metadata={"env": "prod"})
            print(page.pagination.total_items, [s.id for s in page.items])
        """
        return await self._call(list_sandboxes_request(state, metadata, page, page_size))

    def iter_sandboxes(
        self,
        *,
        state: States = None,
        metadata: Mapping[str, str] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Sandbox]:
        """Every sandbox matching the filters, fetching page after page as iteration goes on.

        for sandbox in client.iter_sandboxes(state="Running"):
            print(sandbox.id)
        """
        states = _states(state)

        def page(number: int) -> APIRequest[ListSandboxesResponse]:
            return list_sandboxes_request(states, metadata, number, page_size)

        return self._paginate(PageRequest(page=page, items=lambda result: result.items, has_next=_has_next))

    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Terminate and remove a sandbox (`DELETE /sandboxes/{id}`, 204)."""
        return await self._call(
            APIRequest("DELETE", path("/sandboxes/{id}", id=sandbox_id), parse=no_content)
        )

    async def pause_sandbox(self, sandbox_id: str) -> None:
        """Ask a running sandbox to pause (202); poll `get_sandbox` until it is `Paused`."""
        return await self._call(
            APIRequest("POST", path("/sandboxes/{id}/pause", id=sandbox_id), parse=no_content)
        )

    async def resume_sandbox(self, sandbox_id: str) -> None:
        """Ask a paused sandbox to resume (202); poll `get_sandbox` until it is `Running`."""
        return await self._call(
            APIRequest("POST", path("/sandboxes/{id}/resume", id=sandbox_id), parse=no_content)
        )

    async def renew_expiration(
        self, sandbox_id: str, expires_at: datetime | timedelta
    ) -> RenewSandboxExpirationResponse:
        """Move the sandbox's expiry to `expires_at` (a datetime, or a timedelta from now).

        client.renew_expiration(sandbox.id, timedelta(minutes=30))
        """
        if isinstance(expires_at, timedelta):
            expires_at = datetime.now(UTC) + expires_at
        body = RenewSandboxExpirationRequest(expires_at=expires_at).to_wire()
        return await self._call(
            APIRequest(
                "POST",
                path("/sandboxes/{id}/renew-expiration", id=sandbox_id),
                json=body,
                parse=model(RenewSandboxExpirationResponse),
            )
        )

    async def get_endpoint(
        self,
        sandbox_id: str,
        port: int,
        *,
        use_server_proxy: bool = False,
        expires: datetime | timedelta | int | None = None,
    ) -> Endpoint:
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
        return await self._call(
            APIRequest(
                "GET",
                path("/sandboxes/{id}/endpoints/{port}", id=sandbox_id, port=int(port)),
                params=params,
                parse=model(Endpoint),
            )
        )

    async def get_signed_endpoint(
        self, sandbox_id: str, port: int, expires: datetime | timedelta | int
    ) -> Endpoint:
        """A signed access route to `port`, valid until `expires` (OSEP-0011; `?expires=` seconds).

        endpoint = client.get_signed_endpoint(sandbox.id, 8000, timedelta(hours=1))
        """
        return await self.get_endpoint(sandbox_id, port, expires=expires)

    async def patch_metadata(self, sandbox_id: str, patch: Mapping[str, str | None]) -> Sandbox:
        """Merge-patch the sandbox's metadata: a string sets a key, `None` deletes it.

        client.patch_metadata(sandbox.id, {"team": "infra", "obsolete": None})
        """
        body = PatchSandboxMetadataRequest.model_validate(dict(patch)).to_wire()
        return await self._call(
            APIRequest(
                "PATCH", path("/sandboxes/{id}/metadata", id=sandbox_id), json=body, parse=model(Sandbox)
            )
        )

    # -- snapshots ---------------------------------------------------------------------------------

    async def create_snapshot(self, sandbox_id: str, *, name: str | None = None) -> Snapshot:
        """Start capturing a running sandbox (202, state `Creating`); poll `get_snapshot` for `Ready`."""
        body = CreateSnapshotRequest(name=name).to_wire() if name is not None else {}
        return await self._call(
            APIRequest(
                "POST", path("/sandboxes/{id}/snapshots", id=sandbox_id), json=body, parse=model(Snapshot)
            )
        )

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot with this id (`GET /snapshots/{id}`)."""
        return await self._call(
            APIRequest("GET", path("/snapshots/{id}", id=snapshot_id), parse=model(Snapshot))
        )

    async def list_snapshots(
        self,
        *,
        sandbox_id: str | None = None,
        state: States = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> ListSnapshotsResponse:
        """One page of snapshots (`GET /snapshots`), optionally of one sandbox and in some states."""
        return await self._call(list_snapshots_request(sandbox_id, state, page, page_size))

    def iter_snapshots(
        self, *, sandbox_id: str | None = None, state: States = None, page_size: int | None = None
    ) -> AsyncIterator[Snapshot]:
        """Every snapshot matching the filters, page after page."""
        states = _states(state)

        def page(number: int) -> APIRequest[ListSnapshotsResponse]:
            return list_snapshots_request(sandbox_id, states, number, page_size)

        return self._paginate(PageRequest(page=page, items=lambda result: result.items, has_next=_has_next))

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot (`DELETE /snapshots/{id}`)."""
        return await self._call(
            APIRequest("DELETE", path("/snapshots/{id}", id=snapshot_id), parse=no_content)
        )

    # -- diagnostics -------------------------------------------------------------------------------

    async def get_diagnostic_logs(self, sandbox_id: str, scope: str = "all") -> DiagnosticContentResponse:
        """A descriptor of the sandbox's diagnostic log text for `scope` (inline or by URL)."""
        return await self._call(diagnostic_request(sandbox_id, "logs", scope))

    async def get_diagnostic_events(self, sandbox_id: str, scope: str = "all") -> DiagnosticContentResponse:
        """A descriptor of the sandbox's diagnostic event text for `scope` (inline or by URL)."""
        return await self._call(diagnostic_request(sandbox_id, "events", scope))
