"""The egress HTTP API of one sandbox (`egress-api.yaml`: `/policy`, `/healthz`, `/credential-vault`).

Served by `osbox serve` as port 18080 of each sandbox (through its proxy). It works on a `PolicyStore`
(e.g. `SandboxEgress`): the app parses and merges, the store enforces. Errors are `{code, message}`: 400
for bad input (including more rules than the cap), 401 without the right `OPENSANDBOX-EGRESS-AUTH` token
(compared in constant time), 405, and 501 when the machine cannot enforce the policy asked for. The
Credential Vault routes are `vault.CredentialVault`'s; after each change the vault's compiled bindings
go to `on_bindings` (the credential proxy), so a change is in force when its answer is sent.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ...models.egress import EnforcementMode, PolicyStatusResponse
from .._body import BadBody, read_json
from .enforcer import Enforcement
from .engine import EgressUnavailable
from .policy import Policy, PolicyError, parse_delete_body, parse_patch_body, policy_from_body
from .vault import CredentialVault, VaultError

__all__ = ["AUTH_HEADER", "BODY_LIMIT", "BindingsSink", "PolicyStore", "create_egress_app"]

_log = logging.getLogger(__name__)

AUTH_HEADER = "OPENSANDBOX-EGRESS-AUTH"
BODY_LIMIT = 1 << 20
"""Largest `/policy` body read (1 MiB, as the reference); 4096 rules fit well within it."""

BindingsSink = Callable[[list[dict[str, Any]]], Awaitable[None]]
"""Where a vault's compiled bindings go after each change (`CredentialVault.rules()`)."""


class PolicyStore(Protocol):
    """What the app needs of a sandbox's egress: the policy, how it is enforced, and replacing it."""

    @property
    def policy(self) -> Policy: ...

    @property
    def enforcement(self) -> Enforcement: ...

    async def replace(self, policy: Policy) -> None:
        """Put `policy` in force; `EgressUnavailable` when the machine cannot enforce it."""


def create_egress_app(
    store: PolicyStore,
    *,
    auth_token: str | None,
    vault: CredentialVault | None = None,
    on_bindings: BindingsSink | None = None,
) -> Starlette:
    """The egress app over `store` (and `vault`: the `/credential-vault` routes; None: 501 there;
    `on_bindings` gets its bindings after each change); `auth_token` None leaves the routes open (as
    the reference does when it has no token)."""
    expected = auth_token.encode() if auth_token is not None else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get(AUTH_HEADER)
        return given is not None and hmac.compare_digest(given.encode(), expected)

    async def policy_route(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "UNAUTHORIZED", f"missing or wrong {AUTH_HEADER} header")
        try:
            if request.method == "GET":
                return _status(store, include_policy=True)
            if request.method in ("POST", "PUT"):
                body = await read_json(request, BODY_LIMIT, required=False)
                await store.replace(policy_from_body(body))
                reason = "policy reset to default deny-all" if body in (None, {}) else None
                return _status(store, reason=reason)
            if request.method == "PATCH":
                incoming = parse_patch_body(await read_json(request, BODY_LIMIT))
                await store.replace(store.policy.patched(incoming))
                return _status(store)
            if request.method == "DELETE":
                targets = parse_delete_body(await read_json(request, BODY_LIMIT))
                remaining, removed = store.policy.without(targets)
                if not removed:
                    return _status(store, reason="no rule matched the given targets")
                await store.replace(remaining)
                return _status(store)
        except (BadBody, PolicyError) as exc:
            return _error(400, "INVALID_REQUEST", str(exc))
        except EgressUnavailable as exc:
            return _error(501, "NOT_SUPPORTED", str(exc))
        except Exception:
            _log.exception("applying an egress policy failed")
            return _error(500, "INTERNAL_ERROR", "the egress policy could not be applied")
        return _error(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on /policy")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def vault_route(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "UNAUTHORIZED", f"missing or wrong {AUTH_HEADER} header")
        if vault is None:
            return _error(501, "NOT_SUPPORTED", "this sandbox has no credential vault")
        try:
            answer = await _vault_answer(vault, request)
            if request.method != "GET" and on_bindings is not None:
                await on_bindings(vault.rules())
            return answer
        except BadBody as exc:
            return _error(400, "INVALID_REQUEST", str(exc))
        except VaultError as exc:
            return _error(exc.status, exc.code, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404 and 405 (an unknown path or method): `{code, message}` like the rest.
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_REQUEST")
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/policy", policy_route, methods=methods),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/credential-vault", vault_route, methods=["GET", "POST", "PATCH", "DELETE"]),
            Route("/credential-vault/{kind:str}", vault_route, methods=["GET"]),
            Route("/credential-vault/{kind:str}/{name:str}", vault_route, methods=["GET"]),
        ],
    )


async def _vault_answer(vault: CredentialVault, request: Request) -> Response:
    """One `/credential-vault` request (see `vault.py`); `VaultError` for what it refuses."""
    kind, name = request.path_params.get("kind"), request.path_params.get("name")
    if kind is None:
        if request.method == "POST":
            return JSONResponse(vault.create(await read_json(request, BODY_LIMIT)), status_code=201)
        if request.method == "PATCH":
            return JSONResponse(vault.mutate(await read_json(request, BODY_LIMIT)))
        if request.method == "DELETE":
            vault.delete()
            return Response(status_code=204)
        return JSONResponse(vault.state())
    if kind == "credentials":
        if name is None:
            state = vault.state()
            return JSONResponse({"revision": state["revision"], "credentials": state["credentials"]})
        return JSONResponse(vault.credential(name))
    if kind == "bindings":
        if name is None:
            state = vault.state()
            return JSONResponse({"revision": state["revision"], "bindings": state["bindings"]})
        return JSONResponse(vault.binding(name))
    raise VaultError(404, "NOT_FOUND", f"no such route: /credential-vault/{kind}")


def _status(store: PolicyStore, *, include_policy: bool = False, reason: str | None = None) -> Response:
    policy = store.policy
    enforcement = store.enforcement
    answer = PolicyStatusResponse(
        status="ok",
        mode=policy.mode,
        enforcement_mode=EnforcementMode(enforcement.mode),
        reason=reason or enforcement.reason,
        policy=policy.to_model() if include_policy else None,
    )
    body: dict[str, Any] = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
    return JSONResponse(body)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)
