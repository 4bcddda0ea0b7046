"""Names and numbers of the OpenSandbox wire that the SDK and `osbox serve` both use, defined once.

from osbox._wire import EXECD_PORT
endpoint = lifecycle.get_endpoint(sandbox_id, EXECD_PORT)
"""

from __future__ import annotations

__all__ = ["EGRESS_PORT", "EXECD_PORT", "EXECD_TOKEN_HEADER", "LOG_CURSOR_HEADER"]

#: execd's port inside every sandbox (commands, files, code).
EXECD_PORT = 44772
#: The egress sidecar's port inside every sandbox (its network policy).
EGRESS_PORT = 18080
#: The header execd reads the access token from.
EXECD_TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN"  # noqa: S105 - a header name, not a secret
#: The header carrying the next cursor of `GET /command/{id}/logs`.
LOG_CURSOR_HEADER = "EXECD-COMMANDS-TAIL-CURSOR"
