"""`AsyncStream`: a stream of events from a client (`AsyncExecdClient.run_command`, ...).

    async with execd.run_command("make test") as stream:
        async for event in stream:
            print(event.type, event.text)

    result = await execd.run_command("ls").run(on_event=print)   # handler form; the folded result

What turns bytes into events and events into a result is shared by both twins (`osbox._streaming`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx2

from .._base_client import _raw_is_body
from .._exceptions import StreamError
from .._streaming import AsyncHandler, StreamFolder, _astopped, _Collector, _EventReader

if TYPE_CHECKING:
    from typing import Self

    from .._operation import StreamRequest
    from .client import AsyncAPIClient

__all__ = ["AsyncStream"]

E = TypeVar("E")
R = TypeVar("R")


class AsyncStream(Generic[E, R]):
    """A stream of events: iterate it (`async for`), use it as a context manager, or `run` it.

    The request is sent when the stream is first entered or iterated; the response is always released,
    also when iteration stops early. A handler given to `run` ends the stream early by returning `STOP`
    (the result so far is returned) or by raising (the exception propagates).
    """

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

    async def _read(self, sink: StreamFolder[E, Any]) -> AsyncGenerator[None, None]:
        """Feed the body into `sink`, yielding after each chunk; releases the response at the end."""
        response = await self._open()
        reader = _EventReader(self._spec, response.request)
        # The transport's chunks as they come when the body is not encoded: httpx2's decoding
        # layer would only pass them through, at a Python step per 64 KiB read.
        chunks = response.aiter_raw() if _raw_is_body(response) else response.aiter_bytes()
        try:
            async for chunk in chunks:
                reader.feed(chunk, sink)
                yield
            reader.finish(sink)
            yield
        except httpx2.HTTPError as exc:
            if not reader.ended:
                raise self._client._map_error(exc, response.request, answered=True) from exc
        finally:
            await self.aclose()

    async def __aiter__(self) -> AsyncGenerator[E, None]:
        collector: _Collector[E] = _Collector()
        reading = self._read(collector)
        try:
            async for _ in reading:
                for event in collector.take():
                    yield event
        finally:
            await reading.aclose()

    async def run(self, on_event: AsyncHandler[E] | None = None) -> R:
        """Consume the stream, calling `on_event` for each event; return the folded result.

        On an `AsyncStream`, `on_event` may be a plain function or a coroutine function.
        """
        folder = self._spec.new_folder()
        async with self:
            folder.opened(await self._open())
            if on_event is None:
                reading = self._read(folder)  # runs of output fold without an event per line
                try:
                    async for _ in reading:
                        pass
                finally:
                    await reading.aclose()
            else:
                events = self.__aiter__()
                try:
                    async for event in events:
                        folder.add(event)
                        if await _astopped(on_event(event)):
                            break
                finally:
                    await events.aclose()
        return folder.result()

    @property
    def response(self) -> httpx2.Response | None:
        """The HTTP response once the stream is open (its status and headers), else None."""
        return self._response

    async def aclose(self) -> None:
        """Release the connection. Safe to call twice."""
        self._closed = True
        if self._response is not None:
            await self._response.aclose()
