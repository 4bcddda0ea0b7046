"""Bash sessions: `POST /session`, `POST /session/{id}/run`, `DELETE /session/{id}`.

As in the reference (wire-behaviour §1.7), each run is a fresh `bash` that restores the
session's exported variables and cwd, runs the command with `eval` (so `export`, `cd` and even
`exit N` behave as in an interactive shell), and on exit saves `export -p` and `pwd` again.
Functions, aliases and non-exported variables do not persist. The state files live inside the
sandbox, in its private `/tmp/.osbox/sessions/`, written by the sandbox user; the server keeps
only the session id and the run in progress. stderr is merged into stdout.

At most `max_sessions` sessions per sandbox (a 429 `LIMIT_EXCEEDED` beyond); each runs at most one
command at a time, so sessions cannot get round the cap on running commands.

osbox's extensions, as for `POST /command`: `OSBOX-STDIN: pipe` gives the run a stdin pipe (fed by
`POST /command/{run id}/stdin`, the id in `OSBOX-COMMAND-ID`; without it the run reads /dev/null),
and a client that drops the stream of a running run leaves no process behind (`disconnect`).

Decision: one run at a time per session; a second concurrent run gets `init` and then a bare
`{code: RUNTIME_ERROR, message: "session ... is busy"}` (§4.2), like the reference's busy context.
A run killed by its timeout or by `DELETE` saves no state.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .commands import DEFAULT_CWD, command_of, new_id, resolve_cwd, spawn_or_fail
from .disconnect import kill_wanted, on_disconnect
from .errors import (
    RUNTIME_ERROR,
    ExecdError,
    error_event,
    in_sandbox,
)
from .inputs import MAX_TIMEOUT_MS, json_body, json_object, optional_int, optional_str, sandbox_of
from .output import framing_headers, framing_of
from .runner import Execution, RunSpec
from .state import SandboxApi, Session
from .stdin import announce_pipe, pipe_for
from .streaming import event_response, frame

__all__ = ["SESSION_SCRIPT", "SessionsApi"]

#: A run (and a bash context's cell) without a `timeout` is killed after this long: the reference's.
DEFAULT_RUN_TIMEOUT_S = 24 * 3600.0

#: `bash -c SESSION_SCRIPT osbox-session <command> <state path> <cwd or "">`
SESSION_SCRIPT = r"""
__osbox_cmd=$1 __osbox_state=$2 __osbox_cwd=$3
set --
if [ -f "$__osbox_state.env" ]; then . "$__osbox_state.env" 2>/dev/null; fi
if [ -f "$__osbox_state.cwd" ]; then cd -- "$(cat -- "$__osbox_state.cwd")" 2>/dev/null; fi
if [ -n "$__osbox_cwd" ]; then cd -- "$__osbox_cwd" || exit 1; fi
unset __osbox_cwd
trap 'export -p > "$__osbox_state.env"; pwd > "$__osbox_state.cwd"' EXIT
eval "$__osbox_cmd"
"""


class SessionsApi(SandboxApi):
    """The session endpoints, over the service's per-sandbox state."""

    def _session(self, request: Request, session_id: str) -> Session:
        return self._find(self._state(request).sessions, session_id, "session")

    async def create(self, request: Request) -> Response:
        """`POST /session {cwd?}` → `{session_id}`; the cwd is created if missing."""
        body = await json_body(request, required=False)
        cwd = optional_str(json_object(body).get("cwd"), "cwd") if body is not None else None
        session_id = new_id()
        state = self._state(request)
        with state.session_budget.claim(len(state.sessions)):  # 429 beyond `max_sessions`
            sessions = sandbox_of(request).sessions
            state_path = await in_sandbox(sessions.create(session_id, cwd or None), "session_init")
            state.sessions[session_id] = Session(session_id, state_path)
        return JSONResponse({"session_id": session_id})

    async def run(self, request: Request) -> Response:
        """`POST /session/{id}/run {command, cwd?, timeout?}`: streamed like a foreground command."""
        session = self._session(request, request.path_params["id"])
        body = json_object(await json_body(request))
        command = command_of(body)
        timeout_ms = optional_int(body.get("timeout"), "timeout", maximum=MAX_TIMEOUT_MS)
        cwd_arg = optional_str(body.get("cwd"), "cwd")
        cwd = await resolve_cwd(request, cwd_arg) if cwd_arg else ""
        kill = kill_wanted(request.headers, self._state(request).limits.kill_on_disconnect)

        async with session.lock:
            if session.current is not None and session.current.running:
                busy = ExecdError(500, RUNTIME_ERROR, f"session {session.id} is busy running a command")
                return event_response(frame("init", text=session.id), None, error_event(busy))
            spec = RunSpec(
                argv=["bash", "-c", SESSION_SCRIPT, "osbox-session", command, session.state_path, cwd],
                cwd=DEFAULT_CWD,
                timeout_s=timeout_ms / 1000 if timeout_ms else DEFAULT_RUN_TIMEOUT_S,
                merge_stderr=True,
                framing=framing_of(request.headers),
                stdin=pipe_for(request.headers),
            )
            execution = Execution(f"{session.id}-{secrets.token_hex(4)}", command, spec)
            await spawn_or_fail(execution, request)  # closes the stdin pipe if it fails
            session.current = execution
        init = frame("init", text=session.id)
        response = event_response(init, execution.channel, headers=framing_headers(execution.spec.framing))
        if spec.stdin is not None:
            announce_pipe(response, execution.id)
        return on_disconnect(response, execution, kill=kill)

    async def delete(self, request: Request, session_id: str | None = None) -> Response:
        """`DELETE /session/{id}`: kill a running run, remove the session and its state files."""
        session_id = session_id or request.path_params["id"]
        session = self._session(request, session_id)
        self._state(request).sessions.pop(session_id, None)
        if session.current is not None:
            await session.current.kill()
        await in_sandbox(sandbox_of(request).sessions.drop(session.state_path), "session_drop")
        return Response(status_code=200)
