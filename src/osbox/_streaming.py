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
response is always released, also when iteration stops early.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx2

from ._decoder import EventDecoder, StreamDecodeError
from ._exceptions import StreamError

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
    """Turns decoded JSON objects into events; shared by both stream twins (no I/O)."""

    def __init__(self, spec: StreamRequest[E, Any], request: httpx2.Request) -> None:
        self._spec = spec
        self._request = request
        self._decoder = EventDecoder()
        self.seen_any = False

    def feed(self, chunk: bytes) -> list[E]:
        return self._events(self._decode(self._decoder.feed, chunk))

    def finish(self) -> list[E]:
        events = self._events(self._decode(lambda _: self._decoder.flush(), b""))
        if not self.seen_any and self._spec.require_events:
            raise StreamError("the stream ended without any event", request=self._request)
        return events

    def _decode(self, step: Callable[[bytes], list[dict[str, Any]]], chunk: bytes) -> list[dict[str, Any]]:
        try:
            return step(chunk)
        except StreamDecodeError as exc:
            raise StreamError(str(exc), request=self._request) from exc

    def _events(self, objects: list[dict[str, Any]]) -> list[E]:
        events = []
        for obj in objects:
            self.seen_any = True
            if "type" not in obj and "code" in obj and set(obj) <= {"code", "message"}:
                # An error the server appended after the stream had started: never drop it.
                raise StreamError(str(obj.get("message") or ""), code=str(obj["code"]), request=self._request)
            events.append(self._spec.event(obj))
        return events


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

    def __iter__(self) -> Iterator[E]:
        response = self._open()
        reader = _EventReader(self._spec, response.request)
        try:
            for chunk in response.iter_bytes():
                yield from reader.feed(chunk)
            yield from reader.finish()
        except httpx2.HTTPError as exc:
            raise self._client._map_error(exc, response.request) from exc
        finally:
            self.close()

    def run(self, on_event: Callable[[E], object] | None = None) -> R:
        """Consume the stream, calling `on_event` for each event; return the folded result."""
        folder = self._spec.new_folder()
        with self:
            for event in self:
                folder.add(event)
                if on_event is not None and on_event(event) is STOP:
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

    async def __aiter__(self) -> AsyncIterator[E]:
        response = await self._open()
        reader = _EventReader(self._spec, response.request)
        try:
            async for chunk in response.aiter_bytes():
                for event in reader.feed(chunk):
                    yield event
            for event in reader.finish():
                yield event
        except httpx2.HTTPError as exc:
            raise self._client._map_error(exc, response.request) from exc
        finally:
            await self.aclose()

    async def run(self, on_event: Callable[[E], object | Awaitable[object]] | None = None) -> R:
        """Consume the stream, calling `on_event` (sync or async) for each event; return the result."""
        folder = self._spec.new_folder()
        async with self:
            iterator = self.__aiter__()
            try:
                async for event in iterator:
                    folder.add(event)
                    if on_event is not None:
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
