"""execd's pieces that do no I/O: stream events and their folds, wire conversions, headers.

The client is `AsyncExecdClient` (`osbox._async.execd`) and its generated twin `ExecdClient`
(`osbox._sync.execd`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal

import httpx2
import pydantic

from ._decoder import OutputRun
from ._exceptions import APIStatusError, StreamError
from ._operation import (
    APIRequest,
    StreamRequest,
    model,
    no_content,
)
from ._streaming import StreamFolder
from ._wire import (
    EXECD_TOKEN_HEADER,
    LOG_CURSOR_HEADER,
    ON_DISCONNECT_HEADER,
    ON_DISCONNECT_KEEP,
    ON_DISCONNECT_KILL,
    OUTPUT_FRAMING_EXACT,
    OUTPUT_FRAMING_HEADER,
)
from .models.events import EventType, Execution, ExecutionBuilder, StreamEvent
from .models.execd import (
    CreateSessionResponse,
    FileWatchEvent,
    Metrics,
)

__all__ = [
    "EXECD_TOKEN_HEADER",
    "LOGS_CURSOR_HEADER",
    "CommandLogs",
    "OutputFraming",
    "output_is_exact",
    "stream_event",
]

#: How a command stream frames output: osbox's "exact" (the bytes as written) or the reference's
#: "lines" (one event per line, without its ending).
OutputFraming = Literal["exact", "lines"]

#: The header carrying the next cursor of `GET /command/{id}/logs`.
LOGS_CURSOR_HEADER = LOG_CURSOR_HEADER


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

    def opened(self, response: httpx2.Response) -> None:
        if output_is_exact(response):
            self._builder.chunks = True  # exact framing: every text as it is

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


def _watch_event(data: dict[str, Any]) -> FileWatchEvent:
    result: FileWatchEvent = _validated(FileWatchEvent, data)
    return result


class _NoResult(StreamFolder[Any, None]):
    """An endless stream's `run()` result: nothing (it ends when the consumer stops)."""

    def add(self, event: Any) -> None:
        pass

    def result(self) -> None:
        return None


def _watch_unsupported(exc: APIStatusError) -> bool:
    """Whether an error answer to `GET /files/watch` says the server has no such route (not that
    the path is missing: that is `FILE_NOT_FOUND`)."""
    return exc.status_code in (404, 405, 501) and exc.code != "FILE_NOT_FOUND"


class _LastMetrics(StreamFolder[Metrics, "Metrics | None"]):
    """The result of a metrics stream: its last sample (None if it carried none)."""

    def __init__(self) -> None:
        self._last: Metrics | None = None

    def add(self, event: Metrics) -> None:
        self._last = event

    def result(self) -> Metrics | None:
        return self._last


def output_is_exact(response: httpx2.Response | None) -> bool:
    """Whether the server answered a command stream in osbox's exact framing (see `_wire`)."""
    if response is None:
        return False
    return response.headers.get(OUTPUT_FRAMING_HEADER, "").lower() == OUTPUT_FRAMING_EXACT


def _framing_headers(framing: OutputFraming) -> dict[str, str] | None:
    """The request headers that ask for `framing` ("exact": osbox's header; "lines": none)."""
    if framing == "lines":
        return None
    if framing != OUTPUT_FRAMING_EXACT:
        raise ValueError(f"framing must be 'exact' or 'lines', got {framing!r}")
    return {OUTPUT_FRAMING_HEADER: OUTPUT_FRAMING_EXACT}


def _disconnect_headers(kill_on_disconnect: bool | None) -> dict[str, str]:
    """The request header choosing what a dropped stream does to its run (None: the server's default)."""
    if kill_on_disconnect is None:
        return {}
    return {ON_DISCONNECT_HEADER: ON_DISCONNECT_KILL if kill_on_disconnect else ON_DISCONNECT_KEEP}


def _execution_stream(
    route: str,
    body: dict[str, Any],
    *,
    chunks: bool,
    framing: OutputFraming = "lines",
    kill_on_disconnect: bool | None = None,
) -> StreamRequest[StreamEvent, Execution]:
    headers = {**(_framing_headers(framing) or {}), **_disconnect_headers(kill_on_disconnect)}
    return StreamRequest(
        request=APIRequest("POST", route, json=body, headers=headers or None, parse=no_content),
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

    `cursor` is opaque (execd counts bytes, the spec says lines): pass it back as `cursor=`. Bytes
    that are not UTF-8 are kept in `text` as lone surrogates: `text.encode("utf-8", "surrogateescape")`.
    """

    text: str
    cursor: str | None


def _command_logs(previous: str | None, response: httpx2.Response) -> CommandLogs:
    # The log is the bytes the command wrote: those that are not UTF-8 are kept (surrogateescape).
    text = response.content.decode("utf-8", "surrogateescape")
    return CommandLogs(text=text, cursor=response.headers.get(LOGS_CURSOR_HEADER, previous))


def _session_id(response: httpx2.Response) -> str:
    return model(CreateSessionResponse)(response).session_id


# --- the operations ----------------------------------------------------------------------------------------


def _required(value: str) -> str:
    if not value:
        raise ValueError("an id or language is required, got an empty string")
    return value
