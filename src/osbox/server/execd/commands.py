"""`POST /command`, `DELETE /command?id=`, `GET /command/status/{id}`, `GET /command/{id}/logs`.

Decisions: the log cursor is a byte offset (the reference implementation, wire-behaviour §4.6),
opaque to clients. A command's log on the host keeps only its newest output (`CommandLog`, 64 MiB
by default): a cursor whose bytes were dropped reads on from the oldest byte kept, and the
`EXECD-COMMANDS-LOG-DROPPED` header says how many bytes were skipped. At most
`max_running_commands` commands run per sandbox; one more is a 429 `LIMIT_EXCEEDED`.
Foreground commands are logged too (their output is teed into the same kind of log file), so a
client whose stream broke can fetch the rest with `/command/{id}/logs`.
A foreground command's output is framed one event per line (the reference's framing) unless the
request has osbox's `OSBOX-OUTPUT-FRAMING: exact` header: then events carry the bytes exactly as
written (`output.py`), and the response has the same header back.
`DELETE /command?id=` also accepts a session id and then deletes that session (§1.6).
Unknown command ids → 404 `CONTEXT_NOT_FOUND` (the reference's code for "no such
command/session/context"). A cursor past the end returns nothing and the end as next cursor.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from osbox._wire import LOG_CURSOR_HEADER
from osbox.server._backend.base import BackendError

from .disconnect import kill_wanted, on_disconnect
from .errors import CONTEXT_NOT_FOUND, RUNTIME_ERROR, ExecdError, bad_request, in_sandbox, not_found
from .inputs import (
    INT32_MAX,
    MAX_TIMEOUT_MS,
    check_exec_size,
    json_body,
    json_object,
    optional_int,
    optional_str,
    query_one,
    sandbox_of,
)
from .output import framing_headers, framing_of
from .runner import Execution, RunSpec
from .state import SandboxApi, StateStore
from .stdin import CommandInputApi, announce_pipe, pipe_for
from .streaming import event_response, frame

__all__ = ["DEFAULT_CWD", "CommandsApi", "command_of", "resolve_cwd", "spawn_or_fail"]

DEFAULT_CWD = "/workspace"
#: Present when the cap had dropped output at the cursor asked for: how many bytes were skipped.
LOG_DROPPED_HEADER = "EXECD-COMMANDS-LOG-DROPPED"
#: At most this much log is returned per request; the cursor tells the client where to go on.
MAX_LOG_RESPONSE = 8 * 1024 * 1024


def new_id() -> str:
    """A fresh 32-hex-character id."""
    return secrets.token_hex(16)


def _envs(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_request("'envs' must be an object of string names to string values")
    return value


def command_of(body: dict[str, Any]) -> str:
    """The body's `command`: a non-empty string, else 400."""
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise bad_request("'command' is required and must be a non-empty string")
    return command


async def resolve_cwd(request: Request, path: str, env: dict[str, str] | None = None) -> str:
    """`path` expanded in the sandbox and checked to be a directory; a bad one is a 400."""
    try:
        cwd = await in_sandbox(sandbox_of(request).files.resolve_dir(path, env), "resolve_dir")
    except ExecdError as exc:
        if exc.status >= 500:
            raise
        raise bad_request(f"invalid cwd: {exc.message}") from None
    return cwd


async def spawn_or_fail(execution: Execution, request: Request) -> None:
    """Start an execution; a spawn failure becomes a 500 before any event is sent (and closes the
    execution's stdin pipe, if it has one)."""
    try:
        check_exec_size(execution.spec.argv, execution.spec.env)
    except ExecdError:
        if execution.stdin is not None:
            execution.stdin.close()
        raise
    try:
        await execution.start(sandbox_of(request))
    except BackendError as exc:
        raise ExecdError(500, RUNTIME_ERROR, f"could not start the command: {exc}") from None
    except ValueError as exc:
        raise bad_request(f"could not start the command: {exc}") from None
    except OSError as exc:
        raise ExecdError(500, RUNTIME_ERROR, f"could not start the command: {exc.strerror}") from None


class CommandsApi(SandboxApi):
    """The command endpoints, over the service's per-sandbox state."""

    def __init__(self, store: StateStore, sessions_delete: Any) -> None:
        super().__init__(store)
        self._delete_session = sessions_delete
        #: `POST /command/{id}/stdin` and `/signal` (osbox's extension).
        self.input = CommandInputApi(store)

    def _command(self, request: Request, command_id: str) -> Execution:
        return self._find(self._state(request).commands, command_id, "command")

    async def run(self, request: Request) -> Response:
        """`POST /command`: run `bash -c command` in the foreground (streamed) or background."""
        body = json_object(await json_body(request))
        command = command_of(body)
        background = body.get("background", False)
        if not isinstance(background, bool):
            raise bad_request("'background' must be a boolean")
        timeout_ms = optional_int(body.get("timeout"), "timeout", maximum=MAX_TIMEOUT_MS)
        uid = optional_int(body.get("uid"), "uid", maximum=INT32_MAX)
        gid = optional_int(body.get("gid"), "gid", maximum=INT32_MAX)
        if gid is not None and uid is None:
            raise bad_request("'gid' requires 'uid'")
        envs = _envs(body.get("envs"))
        cwd_arg = optional_str(body.get("cwd"), "cwd")
        cwd = await resolve_cwd(request, cwd_arg, envs or None) if cwd_arg else DEFAULT_CWD
        timeout_s = timeout_ms / 1000 if timeout_ms else None
        return await self.start(
            request,
            command,
            cwd,
            envs,
            uid,
            gid,
            timeout_s,
            background=background,
            framing=framing_of(request.headers),
        )

    async def start(
        self,
        request: Request,
        command: str,
        cwd: str = DEFAULT_CWD,
        envs: dict[str, str] | None = None,
        uid: int | None = None,
        gid: int | None = None,
        timeout_s: float | None = None,
        *,
        background: bool = False,
        framing: str = "lines",
    ) -> Response:
        """Start `bash -c command` and answer with its stream (`init`, then output, for a foreground one).

        `framing` is how output is framed (`output.framing_of`). The request's headers may ask for a
        stdin pipe (`stdin.pipe_for`) and choose what a dropped stream does (`disconnect`)."""
        state = self._state(request)
        kill = kill_wanted(request.headers, state.limits.kill_on_disconnect)
        command_id = new_id()
        stdin = pipe_for(request.headers)
        spec = RunSpec(
            argv=["bash", "-c", command],
            cwd=cwd,
            env=envs or {},
            uid=uid,
            gid=gid,
            timeout_s=timeout_s,
            streamed=not background,
            log_path=state.log_path(command_id),
            log_max_bytes=state.limits.command_log_max_bytes,
            framing=framing,
            stdin=stdin,
        )
        execution = Execution(command_id, command, spec)
        try:
            with state.command_budget.claim(state.running_commands()):
                await spawn_or_fail(execution, request)
                state.add_command(execution)
        except BaseException:
            if stdin is not None:
                stdin.close()
            raise
        init = frame("init", text=command_id)
        if background:
            response = event_response(init, None, frame("execution_complete", execution_time=0))
        else:
            response = event_response(init, execution.channel, headers=framing_headers(framing))
        if stdin is not None:
            announce_pipe(response, command_id)
        return response if background else on_disconnect(response, execution, kill=kill)

    async def interrupt(self, request: Request) -> Response:
        """`DELETE /command?id=`: SIGTERM, up to 3 s, SIGKILL; answers once it has exited."""
        target = query_one(request, "id")
        state = self._state(request)
        execution = state.find_run(target)
        if execution is None:
            if target in state.sessions:
                response: Response = await self._delete_session(request, target)
                return response
            raise not_found(f"command {target} not found", CONTEXT_NOT_FOUND)
        await execution.interrupt()
        return Response(status_code=200)

    async def status(self, request: Request) -> Response:
        """`GET /command/status/{id}`."""
        return JSONResponse(self._command(request, request.path_params["id"]).status())

    async def logs(self, request: Request) -> Response:
        """`GET /command/{id}/logs?cursor=N`: the log from byte N; the next cursor in a header."""
        execution = self._command(request, request.path_params["id"])
        cursor = optional_int(request.query_params.get("cursor") or None, "cursor") or 0
        if execution.log is None:
            return PlainTextResponse(b"", headers={LOG_CURSOR_HEADER: "0"})
        chunk = await execution.log.read(cursor, MAX_LOG_RESPONSE)
        data = chunk.data
        if len(data) == MAX_LOG_RESPONSE:
            # Cut after the last newline so no line (or UTF-8 character) is split across responses.
            newline = data.rfind(b"\n")
            if newline > 0:
                data = data[: newline + 1]
        headers = {LOG_CURSOR_HEADER: str(chunk.next_cursor - len(chunk.data) + len(data))}
        if chunk.dropped:
            headers[LOG_DROPPED_HEADER] = str(chunk.dropped)
        return PlainTextResponse(data, headers=headers)
