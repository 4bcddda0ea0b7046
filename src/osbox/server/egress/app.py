"""The egress HTTP API of one sandbox (`egress-api.yaml`: `/policy`, `/healthz`), as its own app.

Not mounted into `osbox serve` yet. It works on a `PolicyStore` (e.g. `SandboxEgress`): the app parses
and merges, the store enforces. Errors are `{code, message}`: 400 for bad input (including more rules than
the cap), 401 without the right `OPENSANDBOX-EGRESS-AUTH` token (compared in constant time), 405, and 501
when the machine cannot enforce the policy asked for. The Credential Vault routes are not here yet.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ...models.egress import EnforcementMode, PolicyStatusResponse
from .._body import BadBody, read_json
from .enforcer import Enforcement
from .engine import EgressUnavailable
from .policy import Policy, PolicyError, parse_delete_body, parse_patch_body, policy_from_body

__all__ = ["AUTH_HEADER", "BODY_LIMIT", "PolicyStore", "create_egress_app"]

_log = logging.getLogger(__name__)

AUTH_HEADER = "OPENSANDBOX-EGRESS-AUTH"
BODY_LIMIT = 1 << 20
"""Largest `/policy` body read (1 MiB, as the reference); 4096 rules fit well within it."""


class PolicyStore(Protocol):
    """What the app needs of a sandbox's egress: the policy, how it is enforced, and replacing it."""

    @property
    def policy(self) -> Policy: ...

    @property
    def enforcement(self) -> Enforcement: ...

    async def replace(self, policy: Policy) -> None:
        """Put `policy` in force; `EgressUnavailable` when the machine cannot enforce it."""


def create_egress_app(store: PolicyStore, *, auth_token: str | None) -> Starlette:
    """The egress app over `store`; `auth_token` None leaves `/policy` open (as the reference does when
    it has no token)."""
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

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[Route("/policy", policy_route, methods=methods), Route("/healthz", healthz, methods=["GET"])]
    )


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
