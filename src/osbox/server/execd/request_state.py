"""What the server shell hands the execd app with each request: the sandbox it authenticated.

The proxy resolves `/sandboxes/{id}/proxy/44772/...`, checks the execd token and calls
`ExecdService.serve(handle, scope, ...)`, which stores an `ExecdRequestState` in the request's
state (Starlette's `request.state`, backed by `scope["state"]`); the endpoints read it back with
`request_state(request)`, typed:

    scope = with_request_state(scope, ExecdRequestState(sandbox=handle))
    ...
    handle = request_state(request).sandbox
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from osbox.server._backend.base import SandboxHandle

from .errors import RUNTIME_ERROR, ExecdError

__all__ = ["ExecdRequestState", "request_state", "with_request_state"]

#: The attribute of `request.state` it lives under (private to this module).
_ATTRIBUTE = "osbox_execd"


@dataclass(frozen=True)
class ExecdRequestState:
    """The target of one execd request."""

    sandbox: SandboxHandle


def with_request_state(scope: Scope, state: ExecdRequestState) -> Scope:
    """A copy of `scope` carrying `state` (the server's own state entries are kept)."""
    return {**scope, "state": {**scope.get("state", {}), _ATTRIBUTE: state}}


def request_state(connection: HTTPConnection) -> ExecdRequestState:
    """The state the shell attached to this request (a 500 if it attached none: a wiring bug)."""
    state = getattr(connection.state, _ATTRIBUTE, None)
    if not isinstance(state, ExecdRequestState):
        raise ExecdError(500, RUNTIME_ERROR, "no sandbox attached to this request")
    return state
