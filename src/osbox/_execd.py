"""The execd client: commands, bash sessions, code contexts, files and metrics inside one sandbox.

    from osbox import ExecdClient

    with ExecdClient("http://127.0.0.1:44772", access_token="...") as execd:
        result = execd.run_command("echo hello").run()
        assert result.stdout == "hello\\n" and result.exit_code == 0

        with execd.run_command("make test", timeout=600) as stream:   # events as they come
            for event in stream:
                print(event.type, event.text)

`AsyncExecdClient` has the same operations, awaited (`await aexecd.ping()`), with streams used through
`async for` / `async with` / `await stream.run()`. Both are built from one definition per operation
(`ExecdOperations`), so they cannot drift. Durations are seconds (floats) in Python; execd's wire wants
milliseconds, converted here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar, Unpack

import httpx2
import pydantic

from ._async.client import AsyncAPIClient
from ._base_client import BaseClient, ClientOptions
from ._decoder import OutputRun
from ._exceptions import StreamError
from ._files import FileOperations
from ._operation import (
    APIRequest,
    StreamRequest,
    adapter,
    given,
    model,
    no_content,
    operation,
    path,
    stream_operation,
)
from ._streaming import StreamFolder
from ._sync.client import SyncAPIClient
from .models.events import EventType, Execution, ExecutionBuilder, StreamEvent
from .models.execd import (
    CodeContext,
    CodeContextRequest,
    CommandStatusResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    Metrics,
    RunCodeRequest,
    RunCommandRequest,
    RunInSessionRequest,
)

__all__ = ["AsyncExecdClient", "CommandLogs", "ExecdClient", "ExecdOperations", "stream_event"]

#: The header execd reads the access token from.
EXECD_TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN"  # noqa: S105 - a header name, not a secret
#: The header carrying the next cursor of `GET /command/{id}/logs`.
LOGS_CURSOR_HEADER = "EXECD-COMMANDS-TAIL-CURSOR"


# --- turning decoded stream objects into events -------------------------------------------------------------


def stream_event(data: dict[str, Any]) -> StreamEvent:
    """A `StreamEvent` from one decoded stream object.

    An object without `type` is tolerated (it gets the empty type, which folds to nothing); one whose
    fields have the wrong types raises `StreamError`.
    """
    if "type" not in data:
        data = {"type": "", **data}
    try:
        return StreamEvent.from_wire(data)
    except (ValueError, pydantic.ValidationError) as exc:
        raise StreamError(f"malformed StreamEvent in the stream: {exc}") from exc


def _validated(cls: type[pydantic.BaseModel], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise StreamError(f"malformed {cls.__name__} in the stream: {exc}") from exc


def _metrics_event(data: dict[str, Any]) -> Metrics:
    result: Metrics = _validated(Metrics, data)
    return result


class _ExecutionFolder(StreamFolder[StreamEvent, Execution]):
    """Folds command, session or code events into an `Execution` (see `ExecutionBuilder`)."""

    def __init__(self, chunks: bool) -> None:
        self._builder = ExecutionBuilder(chunks=chunks)

    def add(self, event: StreamEvent) -> None:
        self._builder.add(event)

    def add_run(self, run: OutputRun, events: Callable[[OutputRun], list[StreamEvent]]) -> None:
        # Output lines fold straight from their texts: no event object per line.
        self._builder.add_output(run.kinds, run.texts, newline_free=run.newline_free)

    def result(self) -> Execution:
        return self._builder.result()


def _output_events(run: OutputRun) -> list[StreamEvent]:
    """The events of a run of output lines (their fields are already known to be well typed)."""
    return list(map(StreamEvent, run.kinds, run.texts, repeat(None), repeat(None), run.timestamps))


class _LastMetrics(StreamFolder[Metrics, "Metrics | None"]):
    """The result of a metrics stream: its last sample (None if it carried none)."""

    def __init__(self) -> None:
        self._last: Metrics | None = None

    def add(self, event: Metrics) -> None:
        self._last = event

    def result(self) -> Metrics | None:
        return self._last


def _execution_stream(
    route: str, body: dict[str, Any], *, chunks: bool
) -> StreamRequest[StreamEvent, Execution]:
    return StreamRequest(
        request=APIRequest("POST", route, json=body, parse=no_content),
        event=stream_event,
        new_folder=functools.partial(_ExecutionFolder, chunks),
        run_events=_output_events,
        final=_is_final,
    )


def _is_final(event: StreamEvent) -> bool:
    """`execution_complete` and `error` end an execution (see `ExecutionBuilder`)."""
    return event.type in (EventType.EXECUTION_COMPLETE, EventType.ERROR)


# --- small helpers -----------------------------------------------------------------------------------------


def _timeout_ms(seconds: float | None) -> int | None:
    """Seconds (Python) to whole milliseconds (wire), rounding up so a tiny timeout stays positive."""
    if seconds is None:
        return None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
    return math.ceil(seconds * 1000)


@dataclass(frozen=True, slots=True)
class CommandLogs:
    """A slice of a background command's merged output, and where the next read starts.

    `cursor` is opaque (execd counts bytes, the spec says lines): pass it back as `cursor=`.
    """

    text: str
    cursor: str | None


def _command_logs(previous: str | None, response: httpx2.Response) -> CommandLogs:
    return CommandLogs(text=response.text, cursor=response.headers.get(LOGS_CURSOR_HEADER, previous))


def _session_id(response: httpx2.Response) -> str:
    return model(CreateSessionResponse)(response).session_id


# --- the operations ----------------------------------------------------------------------------------------


class ExecdOperations(FileOperations, BaseClient):
    """Every execd operation, defined once; `ExecdClient` and `AsyncExecdClient` serve them."""

    _auth_header: ClassVar[str] = EXECD_TOKEN_HEADER

    def __init__(
        self, base_url: str, access_token: str | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        """`base_url` is execd's address (`http://host:44772`, or an endpoint with a path prefix);
        `access_token` is sent as `X-EXECD-ACCESS-TOKEN`. Options: `timeout`, `max_retries`, `headers`,
        `http_client` (see `BaseClient`). Prefer `from_endpoint(endpoint)`, which also forwards the
        endpoint's headers.
        """
        super().__init__(base_url, access_token, **options)

    # -- health and metrics --

    @operation
    def ping(self) -> APIRequest[None]:
        """Check that execd answers (`GET /ping`); raises an `APIError` if not.

        execd.ping()
        """
        return APIRequest("GET", "/ping", parse=no_content)

    @operation
    def get_metrics(self) -> APIRequest[Metrics]:
        """Current CPU and memory usage (`GET /metrics`).

        m = execd.get_metrics(); print(m.cpu_used_pct, m.mem_used_mib)
        """
        return APIRequest("GET", "/metrics", parse=model(Metrics))

    @stream_operation
    def watch_metrics(self) -> StreamRequest[Metrics, Metrics | None]:
        """A live stream of `Metrics` samples (`GET /metrics/watch`) until you stop reading it.

        with execd.watch_metrics() as samples:
            for m in samples:
                if m.cpu_used_pct > 90: break      # leaving the loop closes the connection

        `run()` returns the last sample.
        """
        return StreamRequest(
            request=APIRequest("GET", "/metrics/watch", parse=no_content),
            event=_metrics_event,
            new_folder=_LastMetrics,
            require_events=False,
        )

    # -- commands --

    @stream_operation
    def run_command(
        self,
        command: str,
        *,
        cwd: str | None = None,
        background: bool = False,
        timeout: float | None = None,
        uid: int | None = None,
        gid: int | None = None,
        envs: Mapping[str, str] | None = None,
    ) -> StreamRequest[StreamEvent, Execution]:
        """Run a shell command (`POST /command`) and stream its events; `run()` folds them.

        `timeout` is in seconds (sent as milliseconds); the server kills the command when it expires.
        `background=True` returns once the command has started: read its output with
        `get_command_logs(result.id)`. `gid` needs `uid`.

            result = execd.run_command("ls /", envs={"LC_ALL": "C"}).run()
            result.exit_code, result.stdout
            started = execd.run_command("python -m http.server", background=True).run()
        """
        body = RunCommandRequest(
            command=command,
            background=background,
            **given(cwd=cwd, timeout=_timeout_ms(timeout), uid=uid, gid=gid, envs=envs),
        )
        return _execution_stream("/command", body.to_wire(), chunks=False)

    @operation
    def interrupt_command(self, command_id: str) -> APIRequest[None]:
        """Stop a running command (`DELETE /command?id=`): SIGTERM, then SIGKILL after a grace period.

        execd.interrupt_command(started.id)
        """
        return APIRequest("DELETE", "/command", params={"id": _required(command_id)}, parse=no_content)

    @operation
    def get_command_status(self, command_id: str) -> APIRequest[CommandStatusResponse]:
        """Whether a command is running, and its exit code once it is not (`GET /command/status/{id}`).

        status = execd.get_command_status(started.id)
        """
        return APIRequest(
            "GET", path("/command/status/{id}", id=command_id), parse=model(CommandStatusResponse)
        )

    @operation
    def get_command_logs(self, command_id: str, cursor: str | int | None = None) -> APIRequest[CommandLogs]:
        """A background command's output from `cursor` on (`GET /command/{id}/logs`), and the next cursor.

        logs = execd.get_command_logs(cmd_id)
        more = execd.get_command_logs(cmd_id, cursor=logs.cursor)   # only what came since
        """
        previous = None if cursor is None else str(cursor)
        return APIRequest(
            "GET",
            path("/command/{id}/logs", id=command_id),
            params={"cursor": previous} if previous is not None else None,
            headers={"Accept": "text/plain"},
            parse=lambda response: _command_logs(previous, response),
        )

    # -- bash sessions --

    @operation
    def create_session(self, cwd: str | None = None) -> APIRequest[str]:
        """Start a bash session whose exported variables and cwd persist across runs; returns its id.

        sid = execd.create_session(cwd="/app")
        """
        body = CreateSessionRequest(**given(cwd=cwd))
        return APIRequest("POST", "/session", json=body.to_wire(), parse=_session_id)

    @stream_operation
    def run_in_session(
        self, session_id: str, command: str, *, cwd: str | None = None, timeout: float | None = None
    ) -> StreamRequest[StreamEvent, Execution]:
        """Run a command in a session (`POST /session/{id}/run`); stderr arrives merged into stdout.

        `timeout` is in seconds (sent as milliseconds); None means no limit.

            execd.run_in_session(sid, "export X=1 && cd /tmp").run()
            assert execd.run_in_session(sid, "echo $X $PWD").run().stdout == "1 /tmp\\n"
        """
        body = RunInSessionRequest(command=command, **given(cwd=cwd, timeout=_timeout_ms(timeout)))
        route = path("/session/{id}/run", id=session_id)
        return _execution_stream(route, body.to_wire(), chunks=False)

    @operation
    def delete_session(self, session_id: str) -> APIRequest[None]:
        """End a session, killing a run in progress (`DELETE /session/{id}`).

        execd.delete_session(sid)
        """
        return APIRequest("DELETE", path("/session/{id}", id=session_id), parse=no_content)

    # -- code contexts --

    @operation
    def list_contexts(self, language: str | None = None) -> APIRequest[list[CodeContext]]:
        """Code contexts, all or those of one language (`GET /code/contexts`).

        for ctx in execd.list_contexts("python"): print(ctx.id)
        """
        params = {"language": language} if language is not None else None
        return APIRequest("GET", "/code/contexts", params=params, parse=adapter(list[CodeContext]))

    @operation
    def create_context(self, language: str, cwd: str | None = None) -> APIRequest[CodeContext]:
        """Start a code context (a kernel) for `language` (`POST /code/context`).

        ctx = execd.create_context("python")
        """
        body = CodeContextRequest(language=language, **given(cwd=cwd))
        return APIRequest("POST", "/code/context", json=body.to_wire(), parse=model(CodeContext))

    @operation
    def get_context(self, context_id: str) -> APIRequest[CodeContext]:
        """One code context (`GET /code/contexts/{id}`); unknown ids are a 404.

        execd.get_context(ctx.id).language
        """
        return APIRequest("GET", path("/code/contexts/{id}", id=context_id), parse=model(CodeContext))

    @operation
    def delete_context(self, context_id: str) -> APIRequest[None]:
        """Stop a code context (`DELETE /code/contexts/{id}`).

        execd.delete_context(ctx.id)
        """
        return APIRequest("DELETE", path("/code/contexts/{id}", id=context_id), parse=no_content)

    @operation
    def delete_contexts_by_language(self, language: str) -> APIRequest[None]:
        """Stop every code context of a language (`DELETE /code/contexts?language=`).

        execd.delete_contexts_by_language("python")
        """
        return APIRequest(
            "DELETE", "/code/contexts", params={"language": _required(language)}, parse=no_content
        )

    @stream_operation
    def execute_code(
        self, code: str, *, context_id: str | None = None, language: str | None = None
    ) -> StreamRequest[StreamEvent, Execution]:
        """Run code in a context (`POST /code`) and stream its events; `run()` folds them.

        Give the context's `language` along with `context_id` (the reference execd runs code without a
        language as a shell command); a `language` alone uses that language's default context. Results
        keep every MIME type (`text`, `image/png`, `text/html`, ...) in `Execution.results`.

            ctx = execd.create_context("python")
            out = execd.execute_code("1 + 1", context_id=ctx.id, language="python").run()
            out.results[0]["text"]  # "2"
        """
        context = None
        if context_id is not None or language is not None:
            context = CodeContext(language=language or "", **given(id=context_id))
        body = RunCodeRequest(code=code, **given(context=context))
        # Kernels send output in chunks carrying their own newlines; a shell (no language) sends lines.
        return _execution_stream("/code", body.to_wire(), chunks=bool(language or context_id))

    @operation
    def interrupt_code(self, context_id: str) -> APIRequest[None]:
        """Interrupt the cell running in a context (`DELETE /code?id=`); it ends with a KeyboardInterrupt.

        execd.interrupt_code(ctx.id)
        """
        return APIRequest("DELETE", "/code", params={"id": _required(context_id)}, parse=no_content)


def _required(value: str) -> str:
    if not value:
        raise ValueError("an id or language is required, got an empty string")
    return value


class ExecdClient(ExecdOperations, SyncAPIClient):
    """A blocking client for execd, the agent inside each sandbox.

    with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox_id, 44772)) as execd:
        print(execd.run_command("uname -a").run().stdout)
    """


class AsyncExecdClient(ExecdOperations, AsyncAPIClient):
    """An asyncio client for execd, the agent inside each sandbox.

    async with AsyncExecdClient.from_endpoint(endpoint) as execd:
        result = await execd.run_command("uname -a").run()
    """
