"""Streams of events as iterators, context managers and handler callbacks: the part both twins share.

`AsyncStream` (`osbox._async.streaming`, written by hand) and `Stream` (`osbox._sync.streaming`,
generated from it by `scripts/unasync.py`) are the I/O shells; what turns bytes into events and events
into a result lives here, once.

    with execd.run_command("make test") as stream:        # sync
        for event in stream:
            print(event.type, event.text)

    async with aexecd.run_command("make test") as stream:  # async
        async for event in stream:
            ...

    result = execd.run_command("ls").run(on_event=print)   # handler form; returns the folded result

A handler ends the stream early by returning `STOP` (the result so far is returned) or by raising
(the exception propagates). The request is sent when the stream is first entered or iterated; the
response is always released, also when iteration stops early. A connection that breaks after the
stream's final event (`execution_complete`) loses nothing: the stream ends normally.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx2

from ._decoder import EventDecoder, Item, OutputRun, StreamDecodeError
from ._exceptions import StreamError

if TYPE_CHECKING:
    from ._operation import StreamRequest

__all__ = ["STOP", "AsyncHandler", "Handler", "StreamFolder"]

E = TypeVar("E")
R = TypeVar("R")


class _Stop:
    def __repr__(self) -> str:
        return "osbox.STOP"


#: Returned by a stream handler to end the stream early.
STOP: Final = _Stop()

#: What `Stream.run` calls for each event; returning `STOP` ends the stream.
Handler = Callable[[E], object]
#: What `AsyncStream.run` calls for each event: a plain function or a coroutine function.
AsyncHandler = Callable[[E], object | Awaitable[object]]


def _stopped(outcome: object) -> bool:
    """Whether a handler's answer ends the stream."""
    return outcome is STOP


async def _astopped(outcome: object) -> bool:
    """`_stopped` for an async stream's handler, which may answer with an awaitable."""
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome is STOP


class StreamFolder(Generic[E, R]):
    """Folds the events of a stream into its result (`Stream.run` returns `result()`).

    E.g. command events fold into an `Execution`, metrics samples into the last one.
    """

    def opened(self, response: httpx2.Response) -> None:
        """The response has come, before any event: e.g. its headers say how output is framed."""

    def add(self, event: E) -> None:
        """Take one event."""

    def add_run(self, run: OutputRun, events: Callable[[OutputRun], list[E]]) -> None:
        """Take a run of output events; `events(run)` builds them. Override to fold the run at once."""
        for event in events(run):
            self.add(event)

    def result(self) -> R:
        """The result so far."""
        raise NotImplementedError


class _EventReader(Generic[E]):
    """Turns the decoder's objects and output runs into events for a sink; shared by both stream twins.

    The sink is the stream's folder when `run()` has no handler (runs of output lines are then folded
    without an event per line), or a `_Collector` that hands events to an iterating caller.
    """

    def __init__(self, spec: StreamRequest[E, Any], request: httpx2.Request) -> None:
        self._spec = spec
        self._request = request
        self._decoder = EventDecoder()
        self.seen_any = False
        #: The stream's final event has come (`StreamRequest.final`): nothing is lost if it breaks now.
        self.ended = False
        self._run_events = spec.run_events or self._events_of_run

    def feed(self, chunk: bytes, sink: StreamFolder[E, Any]) -> None:
        """Decode one chunk of the body into `sink`."""
        try:
            items = self._decoder.feed_items(chunk)
        except StreamDecodeError as exc:
            raise StreamError(str(exc), request=self._request) from exc
        self._put(items, sink)

    def finish(self, sink: StreamFolder[E, Any]) -> None:
        """End of body: decode what is pending; an empty stream that needs events is an error."""
        try:
            items: list[Item] = list(self._decoder.flush())
        except StreamDecodeError as exc:
            raise StreamError(str(exc), request=self._request) from exc
        self._put(items, sink)
        if not self.seen_any and self._spec.require_events:
            raise StreamError("the stream ended without any event", request=self._request)

    def _put(self, items: list[Item], sink: StreamFolder[E, Any]) -> None:
        for item in items:
            self.seen_any = True
            if type(item) is OutputRun:
                sink.add_run(item, self._run_events)
            else:
                event = self._event(item)  # type: ignore[arg-type]
                if self._spec.final is not None and self._spec.final(event):
                    self.ended = True
                sink.add(event)

    def _event(self, obj: dict[str, Any]) -> E:
        if "type" not in obj and "code" in obj and set(obj) <= {"code", "message"}:
            # An error the server appended after the stream had started: never drop it.
            raise StreamError(str(obj.get("message") or ""), code=str(obj["code"]), request=self._request)
        return self._spec.event(obj)

    def _events_of_run(self, run: OutputRun) -> list[E]:
        return [self._spec.event(obj) for obj in run.objects()]


class _Collector(StreamFolder[E, None]):
    """A sink that keeps events until the iterating caller takes them."""

    def __init__(self) -> None:
        self._events: list[E] = []

    def add(self, event: E) -> None:
        self._events.append(event)

    def add_run(self, run: OutputRun, events: Callable[[OutputRun], list[E]]) -> None:
        self._events += events(run)

    def take(self) -> list[E]:
        """The events collected since the last call."""
        events, self._events = self._events, []
        return events

    def result(self) -> None:
        return None
