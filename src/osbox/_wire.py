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
    "GO_SIGNAL_WORDS",
    "LOG_CURSOR_HEADER",
    "ON_DISCONNECT_HEADER",
    "OUTPUT_FRAMING_EXACT",
    "OUTPUT_FRAMING_HEADER",
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
#: osbox's own request header (the reference ignores it) asking command streams for the exact
#: framing: output events carry the bytes as written, in chunks, instead of one line each. A server
#: that honours it sends the same header back; the SDK falls back to the line framing otherwise.
OUTPUT_FRAMING_HEADER = "OSBOX-OUTPUT-FRAMING"
#: The value of `OUTPUT_FRAMING_HEADER` that asks for (and acknowledges) the exact framing.
OUTPUT_FRAMING_EXACT = "exact"
#: How the reference execd (Go's `ProcessState.String`) words the signals that kill commands:
#: its traceback says `signal: killed`. osbox's server words them the same; the SDK reads them back.
GO_SIGNAL_WORDS = {
    "SIGHUP": "hangup",
    "SIGINT": "interrupt",
    "SIGQUIT": "quit",
    "SIGILL": "illegal instruction",
    "SIGTRAP": "trace/breakpoint trap",
    "SIGABRT": "aborted",
    "SIGBUS": "bus error",
    "SIGFPE": "floating point exception",
    "SIGKILL": "killed",
    "SIGUSR1": "user defined signal 1",
    "SIGSEGV": "segmentation fault",
    "SIGUSR2": "user defined signal 2",
    "SIGPIPE": "broken pipe",
    "SIGALRM": "alarm clock",
    "SIGTERM": "terminated",
}
#: osbox's stdin extension (`osbox.server.execd.stdin`): `POST /command` with `OSBOX-STDIN: pipe` gives
#: the command a stdin pipe; the response repeats the header and names the command in `OSBOX-COMMAND-ID`.
STDIN_HEADER = "OSBOX-STDIN"
STDIN_PIPE = "pipe"
COMMAND_ID_HEADER = "OSBOX-COMMAND-ID"
#: osbox's request header choosing what happens to a streamed run (`POST /command`, `/session/{id}/run`,
#: a bash context's `POST /code`) whose client drops the stream: `kill` (its process group) or `keep`
#: (the reference's behaviour). Without it the server's default applies; the response says which did.
ON_DISCONNECT_HEADER = "OSBOX-ON-DISCONNECT"
ON_DISCONNECT_KILL = "kill"
ON_DISCONNECT_KEEP = "keep"
