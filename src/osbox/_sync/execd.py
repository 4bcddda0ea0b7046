# Generated from src/osbox/_async/execd.py by scripts/unasync.py: do not edit.
"""`ExecdClient`: commands, bash sessions, code contexts, files and metrics inside one sandbox.

    from osbox import ExecdClient

    with ExecdClient("http://127.0.0.1:44772", access_token="...") as execd:
        result = execd.run_command("echo hello").run()
        assert result.stdout == "hello\\n" and result.exit_code == 0

        with execd.run_command("make test", timeout=600) as stream:   # events as they come
            for event in stream:
                print(event.type, event.text)

Durations are seconds (floats) in Python; execd's wire wants milliseconds, converted here. Stream events
and their folds are in `osbox._execd`; the file operations come from `.files`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Unpack

from .._base_client import ClientOptions
from .._execd import (
    EXECD_TOKEN_HEADER,
    CommandLogs,
    OutputFraming,
    _command_logs,
    _execution_stream,
    _LastMetrics,
    _metrics_event,
    _NoResult,
    _required,
    _session_id,
    _timeout_ms,
    _watch_event,
)
from .._operation import APIRequest, StreamRequest, adapter, given, model, no_content, path
from .._stdin import PIPE_HEADERS, StdinSource, _signal_request, _stdin_chunks, _stdin_request, _Stop
from ..models.events import Execution, StreamEvent
from ..models.execd import (
    CodeContext,
    CodeContextRequest,
    CommandStatusResponse,
    CreateSessionRequest,
    FileWatchEvent,
    Metrics,
    RunCodeRequest,
    RunCommandRequest,
    RunInSessionRequest,
)
from .files import FileOperations
from .pty import PtyOperations
from .stdin import PipedStream, StopUnpiped
from .streaming import Stream

__all__ = ["ExecdClient"]


class ExecdClient(FileOperations, PtyOperations):
    """Client of execd, the agent inside each sandbox: commands, sessions, code, files, metrics, PTYs.

    with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox_id, 44772)) as execd:
        result = execd.run_command("uname -a").run()
        print(result.stdout)
    """

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

    def ping(self) -> None:
        """Check that execd answers (`GET /ping`); raises an `APIError` if not.

        execd.ping()
        """
        return self._call(APIRequest("GET", "/ping", parse=no_content))

    def watch_files(self, path: str, *, recursive: bool = True) -> Stream[FileWatchEvent, None]:
        """Changes under directory `path` inside the sandbox (`GET /files/watch`, an osbox extension:
        other servers answer 404), until you stop reading. The first event is `init` (the watch is in
        place); `ping`s come while nothing changes; `event.is_change` tells the changes. `sandbox.files.
        watch` wraps this with only the changes and a clear error for servers without it.

            with execd.watch_files("/workspace") as events:
                for event in events:
                    if event.is_change: print(event.type, event.path)
        """
        params = {"path": _required(path), "recursive": "true" if recursive else "false"}
        return self._stream(
            StreamRequest(
                request=APIRequest("GET", "/files/watch", params=params, parse=no_content),
                event=_watch_event,
                new_folder=_NoResult,
                require_events=False,
            )
        )

    def get_metrics(self) -> Metrics:
        """Current CPU and memory usage (`GET /metrics`).

        m = execd.get_metrics(); print(m.cpu_used_pct, m.mem_used_mib)
        """
        return self._call(APIRequest("GET", "/metrics", parse=model(Metrics)))

    def watch_metrics(self) -> Stream[Metrics, Metrics | None]:
        """A live stream of `Metrics` samples (`GET /metrics/watch`) until you stop reading it.

        with execd.watch_metrics() as samples:
            for m in samples:
                if m.cpu_used_pct > 90: break      # leaving the loop closes the connection

        `run()` returns the last sample.
        """
        return self._stream(
            StreamRequest(
                request=APIRequest("GET", "/metrics/watch", parse=no_content),
                event=_metrics_event,
                new_folder=_LastMetrics,
                require_events=False,
            )
        )

    # -- commands --

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
        framing: OutputFraming = "exact",
        stdin: StdinSource | bool | None = None,
        kill_on_disconnect: bool | None = None,
    ) -> Stream[StreamEvent, Execution]:
        """Run a shell command (`POST /command`) and stream its events; `run()` folds them.

        `timeout` is in seconds (sent as milliseconds); the server kills the command when it expires.
        `background=True` returns once the command has started: read its output with
        `get_command_logs(result.id)`. `gid` needs `uid`.

        `framing="exact"` (the default) asks for osbox's exact framing: output events carry the bytes
        as written, in chunks, and `result.stdout` is exactly what the command wrote. A server without
        it (the reference) answers one event per line, which `run()` folds with a newline after each;
        `stream.response` tells which (`osbox.output_is_exact`). `framing="lines"` asks for that.

        `stdin` (an osbox extension; without it the command reads an empty stdin): bytes, str, a binary
        file or an iterator of bytes (async ones too on this twin), fed while the command runs and
        closed after its last byte; `True` leaves the pipe open for `send_command_stdin` /
        `close_command_stdin`. A server without the extension: `StdinNotSupportedError`.

        `kill_on_disconnect` (an osbox extension): whether `osbox serve` kills a foreground command
        whose stream this client drops before it ends (None: the server's default, which is to kill
        it; the reference always keeps it running).

            result = execd.run_command("ls /", envs={"LC_ALL": "C"}).run()
            result.exit_code, result.stdout
            started = execd.run_command("python -m http.server", background=True).run()
            sorted_ = execd.run_command("sort", stdin=b"b\na\n").run().stdout   # "a\nb\n"
        """
        body = RunCommandRequest(
            command=command,
            background=background,
            **given(cwd=cwd, timeout=_timeout_ms(timeout), uid=uid, gid=gid, envs=envs),
        )
        spec = _execution_stream(
            "/command", body.to_wire(), chunks=False, framing=framing, kill_on_disconnect=kill_on_disconnect
        )
        return self._piped(spec, stdin, background=background, unpiped="command")

    def _piped(
        self,
        spec: StreamRequest[StreamEvent, Execution],
        stdin: StdinSource | bool | None,
        *,
        background: bool = False,
        unpiped: StopUnpiped,
    ) -> Stream[StreamEvent, Execution]:
        """The stream of `spec`, whose run reads `stdin` (see `PipedStream`) when there is one."""
        if stdin is None or stdin is False:
            return self._stream(spec)
        spec.request.headers = {**(spec.request.headers or {}), **PIPE_HEADERS}
        source = None if stdin is True else stdin
        return PipedStream(self, spec, source, background=background, unpiped=unpiped)

    def send_command_stdin(self, command_id: str, data: StdinSource, *, eof: bool = False) -> None:
        """Write `data` to the stdin of a command started with `stdin=True`; `eof=True` closes it after.

        Returns once the command's pipe has taken it all (a command that does not read holds it up).
        A command whose stdin is closed (it exited, closed it, or `eof` was sent) is a `ConflictError`.

            execd.send_command_stdin(started.id, b"line\n")
        """
        self._call(_stdin_request(_required(command_id), _stdin_chunks(data, _Stop()), eof=eof))

    def close_command_stdin(self, command_id: str) -> None:
        """Close a command's stdin: it reads end-of-file after what was sent.

        execd.close_command_stdin(started.id)
        """
        self._call(_stdin_request(_required(command_id), b"", eof=True))

    def signal_command(self, command_id: str, signal: str | int) -> None:
        """Send a signal (`"SIGINT"`, `"TERM"`, `2`) to a running command's process group (osbox extension).

        execd.signal_command(started.id, "SIGINT")
        """
        self._call(_signal_request(_required(command_id), signal))

    def interrupt_command(self, command_id: str) -> None:
        """Stop a running command (`DELETE /command?id=`): SIGTERM, then SIGKILL after a grace period.

        execd.interrupt_command(started.id)
        """
        return self._call(
            APIRequest("DELETE", "/command", params={"id": _required(command_id)}, parse=no_content)
        )

    def get_command_status(self, command_id: str) -> CommandStatusResponse:
        """Whether a command is running, and its exit code once it is not (`GET /command/status/{id}`).

        status = execd.get_command_status(started.id)
        """
        return self._call(
            APIRequest("GET", path("/command/status/{id}", id=command_id), parse=model(CommandStatusResponse))
        )

    def get_command_logs(self, command_id: str, cursor: str | int | None = None) -> CommandLogs:
        """A background command's output from `cursor` on (`GET /command/{id}/logs`), and the next cursor.

        logs = execd.get_command_logs(cmd_id)
        more = execd.get_command_logs(cmd_id, cursor=logs.cursor)   # only what came since
        """
        previous = None if cursor is None else str(cursor)
        return self._call(
            APIRequest(
                "GET",
                path("/command/{id}/logs", id=command_id),
                params={"cursor": previous} if previous is not None else None,
                headers={"Accept": "text/plain"},
                parse=lambda response: _command_logs(previous, response),
            )
        )

    # -- bash sessions --

    def create_session(self, cwd: str | None = None) -> str:
        """Start a bash session whose exported variables and cwd persist across runs; returns its id.

        sid = execd.create_session(cwd="/app")
        """
        body = CreateSessionRequest(**given(cwd=cwd))
        return self._call(APIRequest("POST", "/session", json=body.to_wire(), parse=_session_id))

    def run_in_session(
        self,
        session_id: str,
        command: str,
        *,
        cwd: str | None = None,
        timeout: float | None = None,
        framing: OutputFraming = "exact",
        stdin: StdinSource | bool | None = None,
        kill_on_disconnect: bool | None = None,
    ) -> Stream[StreamEvent, Execution]:
        """Run a command in a session (`POST /session/{id}/run`); stderr arrives merged into stdout.

        `timeout` is in seconds (sent as milliseconds); None means the server's default (24 h).
        `framing`, `stdin` and `kill_on_disconnect` as for `run_command` (`stdin=True`: feed it with
        `send_command_stdin(stream.command_id, ...)`). Against a server without the stdin extension
        the run goes on there with an empty stdin, and `StdinNotSupportedError` is raised.

            execd.run_in_session(sid, "export X=1 && cd /tmp").run()
            assert execd.run_in_session(sid, "echo $X $PWD").run().stdout == "1 /tmp\\n"
            execd.run_in_session(sid, "read NAME; export NAME", stdin="ada\\n").run()
        """
        body = RunInSessionRequest(command=command, **given(cwd=cwd, timeout=_timeout_ms(timeout)))
        route = path("/session/{id}/run", id=session_id)
        spec = _execution_stream(
            route, body.to_wire(), chunks=False, framing=framing, kill_on_disconnect=kill_on_disconnect
        )
        return self._piped(spec, stdin, unpiped="none")

    def delete_session(self, session_id: str) -> None:
        """End a session, killing a run in progress (`DELETE /session/{id}`).

        execd.delete_session(sid)
        """
        return self._call(APIRequest("DELETE", path("/session/{id}", id=session_id), parse=no_content))

    # -- code contexts --

    def list_contexts(self, language: str | None = None) -> list[CodeContext]:
        """Code contexts, all or those of one language (`GET /code/contexts`).

        for ctx in execd.list_contexts("python"): print(ctx.id)
        """
        params = {"language": language} if language is not None else None
        return self._call(
            APIRequest("GET", "/code/contexts", params=params, parse=adapter(list[CodeContext]))
        )

    def create_context(self, language: str, cwd: str | None = None) -> CodeContext:
        """Start a code context (a kernel) for `language` (`POST /code/context`).

        ctx = execd.create_context("python")
        """
        body = CodeContextRequest(language=language, **given(cwd=cwd))
        return self._call(APIRequest("POST", "/code/context", json=body.to_wire(), parse=model(CodeContext)))

    def get_context(self, context_id: str) -> CodeContext:
        """One code context (`GET /code/contexts/{id}`); unknown ids are a 404.

        execd.get_context(ctx.id).language
        """
        return self._call(
            APIRequest("GET", path("/code/contexts/{id}", id=context_id), parse=model(CodeContext))
        )

    def delete_context(self, context_id: str) -> None:
        """Stop a code context (`DELETE /code/contexts/{id}`).

        execd.delete_context(ctx.id)
        """
        return self._call(APIRequest("DELETE", path("/code/contexts/{id}", id=context_id), parse=no_content))

    def delete_contexts_by_language(self, language: str) -> None:
        """Stop every code context of a language (`DELETE /code/contexts?language=`).

        execd.delete_contexts_by_language("python")
        """
        return self._call(
            APIRequest("DELETE", "/code/contexts", params={"language": _required(language)}, parse=no_content)
        )

    def execute_code(
        self,
        code: str,
        *,
        context_id: str | None = None,
        language: str | None = None,
        timeout: float | None = None,
        stdin: StdinSource | bool | None = None,
        kill_on_disconnect: bool | None = None,
    ) -> Stream[StreamEvent, Execution]:
        """Run code in a context (`POST /code`) and stream its events; `run()` folds them.

        Give the context's `language` along with `context_id` (the reference execd runs code without a
        language as a shell command); a `language` alone uses that language's default context. Each of
        `Execution.results` is a `CodeResult`: `.text` and `.data` (keyed by MIME type: `text/plain`,
        `image/png`, `text/html`, ...) read the bundles of the reference and of the spec alike.
        `timeout` (seconds, an osbox extension other servers ignore): past it, `osbox serve` interrupts
        the cell, which ends with a `Timeout` error (and `Execution.timed_out`). `stdin` and
        `kill_on_disconnect` are osbox extensions, as for `run_command`: a bash cell reads `stdin` as a
        command does; in a python cell each `input()` reads its next line (its end: `EOFError`;
        without `stdin`, `input()` raises `StdinNotImplementedError`), and a python cell whose stream
        is dropped is interrupted (the kernel and its state stay).

            ctx = execd.create_context("python")
            out = execd.execute_code("1 + 1", context_id=ctx.id, language="python").run()
            out.results[0].text  # "2"
            execd.execute_code("print(input())", language="python", stdin="hi\\n").run().stdout  # "hi\\n"
        """
        context = None
        if context_id is not None or language is not None:
            context = CodeContext(language=language or "", **given(id=context_id))
        body = RunCodeRequest(code=code, **given(context=context, timeout=_timeout_ms(timeout)))
        # Kernels send output in chunks carrying their own newlines; a shell (no language) sends lines.
        in_context = bool(language or context_id)
        spec = _execution_stream(
            "/code", body.to_wire(), chunks=in_context, kill_on_disconnect=kill_on_disconnect
        )
        return self._piped(spec, stdin, unpiped="code" if in_context else "command")

    def interrupt_code(self, context_id: str) -> None:
        """Interrupt the cell running in a context (`DELETE /code?id=`); it ends with a KeyboardInterrupt.

        execd.interrupt_code(ctx.id)
        """
        return self._call(
            APIRequest("DELETE", "/code", params={"id": _required(context_id)}, parse=no_content)
        )
