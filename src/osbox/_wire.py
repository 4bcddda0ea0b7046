"""Names and numbers of the OpenSandbox wire that the SDK and `osbox serve` both use, defined once.

from osbox._wire import EXECD_PORT
endpoint = lifecycle.get_endpoint(sandbox_id, EXECD_PORT)
"""

from __future__ import annotations

__all__ = [
    "COMMAND_ID_HEADER",
    "EGRESS_PORT",
    "EXECD_PORT",
    "EXECD_TOKEN_HEADER",
    "LOG_CURSOR_HEADER",
    "STDIN_HEADER",
    "STDIN_PIPE",
]

#: execd's port inside every sandbox (commands, files, code).
EXECD_PORT = 44772
#: The egress sidecar's port inside every sandbox (its network policy).
EGRESS_PORT = 18080
#: The header execd reads the access token from.
EXECD_TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN"  # noqa: S105 - a header name, not a secret
#: The header carrying the next cursor of `GET /command/{id}/logs`.
LOG_CURSOR_HEADER = "EXECD-COMMANDS-TAIL-CURSOR"
#: osbox's stdin extension (`osbox.server.execd.stdin`): `POST /command` with `OSBOX-STDIN: pipe` gives
#: the command a stdin pipe; the response repeats the header and names the command in `OSBOX-COMMAND-ID`.
STDIN_HEADER = "OSBOX-STDIN"
STDIN_PIPE = "pipe"
COMMAND_ID_HEADER = "OSBOX-COMMAND-ID"
