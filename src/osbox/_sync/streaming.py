# Generated from src/osbox/_async/streaming.py by scripts/unasync.py: do not edit.
"""`Stream`: a stream of events from a client (`ExecdClient.run_command`, ...).

    with execd.run_command("make test") as stream:
        for event in stream:
            print(event.type, event.text)

    result = execd.run_command("ls").run(on_event=print)   # handler form; the folded result

What turns bytes into events and events into a result is shared by both twins (`osbox._streaming`).
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx2

from .._base_client import _raw_is_body
from .._exceptions import StreamError
from .._streaming import Handler, StreamFolder, _Collector, _EventReader, _stopped

if TYPE_CHECKING:
    from typing import Self

    from .._operation import StreamRequest
    from .client import SyncAPIClient

__all__ = ["Stream"]

E = TypeVar("E")
R = TypeVar("R")


class Stream(Generic[E, R]):
    """A stream of events: iterate it (`for`), use it as a context manager, or `run` it.

    The request is sent when the stream is first entered or iterated; the response is always released,
    also when iteration stops early. A handler given to `run` ends the stream early by returning `STOP`
    (the result so far is returned) or by raising (the exception propagates).
    """

    def __init__(self, client: SyncAPIClient, spec: StreamRequest[E, R]) -> None:
        self._client = client
        self._spec = spec
        self._response: httpx2.Response | None = None
        self._closed = False

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self) -> httpx2.Response:
        if self._closed:
            raise StreamError("the stream is closed")
        if self._response is None:
            self._response = self._client._send_stream(self._spec.request)
        return self._response

    def _read(self, sink: StreamFolder[E, Any]) -> Generator[None, None, None]:
        """Feed the body into `sink`, yielding after each chunk; releases the response at the end."""
        response = self._open()
        reader = _EventReader(self._spec, response.request)
        # The transport's chunks as they come when the body is not encoded: httpx2's decoding
        # layer would only pass them through, at a Python step per 64 KiB read.
        chunks = response.iter_raw() if _raw_is_body(response) else response.iter_bytes()
        try:
            for chunk in chunks:
                reader.feed(chunk, sink)
                yield
            reader.finish(sink)
            yield
        except httpx2.HTTPError as exc:
            if not reader.ended:
                raise self._client._map_error(exc, response.request, answered=True) from exc
        finally:
            self.close()

    def __iter__(self) -> Generator[E, None, None]:
        collector: _Collector[E] = _Collector()
        reading = self._read(collector)
        try:
            for _ in reading:
                for event in collector.take():
                    yield event
        finally:
            reading.close()

    def run(self, on_event: Handler[E] | None = None) -> R:
        """Consume the stream, calling `on_event` for each event; return the folded result.

        On an `Stream`, `on_event` may be a plain function or a coroutine function.
        """
        folder = self._spec.new_folder()
        with self:
            folder.opened(self._open())
            if on_event is None:
                reading = self._read(folder)  # runs of output fold without an event per line
                try:
                    for _ in reading:
                        pass
                finally:
                    reading.close()
            else:
                events = self.__iter__()
                try:
                    for event in events:
                        folder.add(event)
                        if _stopped(on_event(event)):
                            break
                finally:
                    events.close()
        return folder.result()

    @property
    def response(self) -> httpx2.Response | None:
        """The HTTP response once the stream is open (its status and headers), else None."""
        return self._response

    def close(self) -> None:
        """Release the connection. Safe to call twice."""
        self._closed = True
        if self._response is not None:
            self._response.close()
