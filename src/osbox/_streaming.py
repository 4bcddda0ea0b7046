"""Streams of events as iterators, context managers and handler callbacks.

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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx2

from ._decoder import EventDecoder, Item, OutputRun, StreamDecodeError
from ._exceptions import StreamError
from ._operation import Folder

if TYPE_CHECKING:
    from typing import Self

    from ._base_client import AsyncAPIClient, SyncAPIClient
    from ._operation import StreamRequest

__all__ = ["STOP", "AsyncStream", "Stream"]

E = TypeVar("E")
R = TypeVar("R")


class _Stop:
    def __repr__(self) -> str:
        return "osbox.STOP"


#: Returned by a stream handler to end the stream early.
STOP: Final = _Stop()


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

    def feed(self, chunk: bytes, sink: Folder[E, Any]) -> None:
        """Decode one chunk of the body into `sink`."""
        try:
            items = self._decoder.feed_items(chunk)
        except StreamDecodeError as exc:
            raise StreamError(str(exc), request=self._request) from exc
        self._put(items, sink)

    def finish(self, sink: Folder[E, Any]) -> None:
        """End of body: decode what is pending; an empty stream that needs events is an error."""
        try:
            items: list[Item] = list(self._decoder.flush())
        except StreamDecodeError as exc:
            raise StreamError(str(exc), request=self._request) from exc
        self._put(items, sink)
        if not self.seen_any and self._spec.require_events:
            raise StreamError("the stream ended without any event", request=self._request)

    def _put(self, items: list[Item], sink: Folder[E, Any]) -> None:
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


class _Collector(Folder[E, None]):
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


class Stream(Generic[E, R]):
    """A stream of events from a sync client. Iterate it, use it as a context manager, or `run` it."""

    def __init__(self, client: SyncAPIClient, spec: StreamRequest[E, R]) -> None:
        self._client = client
        self._spec = spec
        self._response: httpx2.Response | None = None
        self._closed = False

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> httpx2.Response:
        if self._closed:
            raise StreamError("the stream is closed")
        if self._response is None:
            self._response = self._client._send_stream(self._spec.request)
        return self._response

    def _read(self, sink: Folder[E, Any]) -> Generator[None, None, None]:
        """Feed the body into `sink`, yielding after each chunk; releases the response at the end."""
        response = self._open()
        reader = _EventReader(self._spec, response.request)
        try:
            for chunk in response.iter_bytes():
                reader.feed(chunk, sink)
                yield
            reader.finish(sink)
            yield
        except httpx2.HTTPError as exc:
            if not reader.ended:
                raise self._client._map_error(exc, response.request, answered=True) from exc
        finally:
            self.close()

    def __iter__(self) -> Iterator[E]:
        collector: _Collector[E] = _Collector()
        reading = self._read(collector)
        try:
            for _ in reading:
                yield from collector.take()
        finally:
            reading.close()

    def run(self, on_event: Callable[[E], object] | None = None) -> R:
        """Consume the stream, calling `on_event` for each event; return the folded result."""
        folder = self._spec.new_folder()
        with self:
            if on_event is None:
                for _ in self._read(folder):
                    pass
            else:
                for event in self:
                    folder.add(event)
                    if on_event(event) is STOP:
                        break
        return folder.result()

    def close(self) -> None:
        """Release the connection. Safe to call twice."""
        self._closed = True
        if self._response is not None:
            self._response.close()


class AsyncStream(Generic[E, R]):
    """A stream of events from an async client: `async for`, `async with`, or `await stream.run()`."""

    def __init__(self, client: AsyncAPIClient, spec: StreamRequest[E, R]) -> None:
        self._client = client
        self._spec = spec
        self._response: httpx2.Response | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _open(self) -> httpx2.Response:
        if self._closed:
            raise StreamError("the stream is closed")
        if self._response is None:
            self._response = await self._client._send_stream(self._spec.request)
        return self._response

    async def _read(self, sink: Folder[E, Any]) -> AsyncGenerator[None, None]:
        """Feed the body into `sink`, yielding after each chunk; releases the response at the end."""
        response = await self._open()
        reader = _EventReader(self._spec, response.request)
        try:
            async for chunk in response.aiter_bytes():
                reader.feed(chunk, sink)
                yield
            reader.finish(sink)
            yield
        except httpx2.HTTPError as exc:
            if not reader.ended:
                raise self._client._map_error(exc, response.request, answered=True) from exc
        finally:
            await self.aclose()

    async def __aiter__(self) -> AsyncIterator[E]:
        collector: _Collector[E] = _Collector()
        reading = self._read(collector)
        try:
            async for _ in reading:
                for event in collector.take():
                    yield event
        finally:
            await reading.aclose()

    async def run(self, on_event: Callable[[E], object | Awaitable[object]] | None = None) -> R:
        """Consume the stream, calling `on_event` (sync or async) for each event; return the result."""
        folder = self._spec.new_folder()
        async with self:
            if on_event is None:
                reading = self._read(folder)
                try:
                    async for _ in reading:
                        pass
                finally:
                    await reading.aclose()
                return folder.result()
            iterator = self.__aiter__()
            try:
                async for event in iterator:
                    folder.add(event)
                    outcome = on_event(event)
                    if inspect.isawaitable(outcome):
                        outcome = await outcome
                    if outcome is STOP:
                        break
            finally:
                await iterator.aclose()  # type: ignore[attr-defined]
        return folder.result()

    async def aclose(self) -> None:
        """Release the connection. Safe to call twice."""
        self._closed = True
        if self._response is not None:
            await self._response.aclose()
