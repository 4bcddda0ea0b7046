"""Shared fixtures for SDK transport tests: a `Recorder` over `httpx2.MockTransport`.

A test asks for `twin` (run twice: once with the sync client, once with the async one) and writes a
single body for both:

    async def test_get(twin: Recorder) -> None:
        twin.reply(json={...})
        client = twin.client(LifecycleClient, AsyncLifecycleClient, "http://api.test/v1", "key")
        sandbox = await twin.call(client.get_sandbox("abc"))
        assert twin.last.url.path == "/v1/sandboxes/abc"

`twin.call` awaits a coroutine and passes a plain value through; `twin.collect` drains an iterator or an
async iterator into a list. Replies are queued (`reply`) or computed (`respond_with`); without either the
answer is `200 {}`. Every request is recorded, its body already read. HTTP clients the recorder made are
closed when the test ends.
"""

from __future__ import annotations

import inspect
import json as jsonlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx2
import pytest

__all__ = ["BASE_URL", "ChunkStream", "Recorder"]

#: The base URL tests give their clients; the path prefix checks that it is kept.
BASE_URL = "http://api.test/v1"

C = TypeVar("C")
T = TypeVar("T")

Handler = Callable[[httpx2.Request], httpx2.Response]


class ChunkStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body delivered in the given chunks, remembering whether it was closed.

    `fail_after`, when set, raises `httpx2.ReadError` after that many chunks (a broken connection).
    """

    def __init__(self, chunks: Iterable[bytes], *, fail_after: int | None = None) -> None:
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False

    def _next_chunks(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.fail_after is not None and self.sent >= self.fail_after:
                raise httpx2.ReadError("connection reset by peer")
            self.sent += 1
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        yield from self._next_chunks()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._next_chunks():
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Recorder:
    """Answers requests from a script and records them; builds sync or async clients over itself."""

    def __init__(self, *, is_async: bool = False) -> None:
        self.is_async = is_async
        self.requests: list[httpx2.Request] = []
        self._replies: deque[httpx2.Response | Handler] = deque()
        self._handler: Handler | None = None
        self._sync_http: list[httpx2.Client] = []
        self._async_http: list[httpx2.AsyncClient] = []
        self.transport = httpx2.MockTransport(self._handle)

    # -- scripting answers -------------------------------------------------------------------------

    def reply(
        self,
        status: int = 200,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        stream: httpx2.SyncByteStream | httpx2.AsyncByteStream | None = None,
    ) -> None:
        """Queue one answer. `json` is encoded (use `content` for a raw body, `stream` for chunks)."""
        hdrs = dict(headers or {})
        if stream is not None:
            self._replies.append(httpx2.Response(status, headers=hdrs, stream=stream))
        elif content is not None:
            self._replies.append(httpx2.Response(status, headers=hdrs, content=content))
        elif json is not None:
            self._replies.append(httpx2.Response(status, headers=hdrs, json=json))
        else:
            self._replies.append(httpx2.Response(status, headers=hdrs))

    def reply_with(self, handler: Handler) -> None:
        """Queue one answer computed from the request (or raise a transport error from it)."""
        self._replies.append(handler)

    def respond_with(self, handler: Handler) -> None:
        """Answer every request no queued reply covers with `handler`."""
        self._handler = handler

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self._replies:
            reply = self._replies.popleft()
            return reply if isinstance(reply, httpx2.Response) else reply(request)
        if self._handler is not None:
            return self._handler(request)
        return httpx2.Response(200, json={})

    # -- inspecting requests -----------------------------------------------------------------------

    @property
    def last(self) -> httpx2.Request:
        """The most recent request."""
        assert self.requests, "no request was sent"
        return self.requests[-1]

    def last_json(self) -> Any:
        """The JSON body of the most recent request."""
        return jsonlib.loads(self.last.content)

    # -- clients -----------------------------------------------------------------------------------

    def http_client(self) -> Any:
        """A fresh `httpx2.Client` or `httpx2.AsyncClient` (by mode) over this recorder."""
        if self.is_async:
            async_http = httpx2.AsyncClient(transport=self.transport)
            self._async_http.append(async_http)
            return async_http
        sync_http = httpx2.Client(transport=self.transport)
        self._sync_http.append(sync_http)
        return sync_http

    def client(self, sync_cls: type[Any], async_cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        """`sync_cls(*args, **kwargs)` or `async_cls(...)` (by mode), sending through this recorder."""
        cls = async_cls if self.is_async else sync_cls
        kwargs.setdefault("http_client", self.http_client())
        return cls(*args, **kwargs)

    @staticmethod
    async def call(value: Any) -> Any:
        """Await `value` if it is awaitable (async client), else return it (sync client)."""
        if inspect.isawaitable(value):
            return await value
        return value

    @staticmethod
    async def collect(items: Any) -> list[Any]:
        """Drain an iterator or an async iterator into a list."""
        if hasattr(items, "__aiter__"):
            return [item async for item in items]
        return list(items)

    async def aclose(self) -> None:
        """Close every HTTP client this recorder made."""
        for sync_http in self._sync_http:
            sync_http.close()
        for async_http in self._async_http:
            await async_http.aclose()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A sync-mode recorder."""
    rec = Recorder(is_async=False)
    try:
        yield rec
    finally:
        await rec.aclose()


@pytest.fixture
async def arecorder() -> AsyncIterator[Recorder]:
    """An async-mode recorder."""
    rec = Recorder(is_async=True)
    try:
        yield rec
    finally:
        await rec.aclose()


@pytest.fixture(params=["sync", "async"])
async def twin(request: pytest.FixtureRequest) -> AsyncIterator[Recorder]:
    """A recorder in sync mode, then in async mode: one test body covers both client twins."""
    rec = Recorder(is_async=request.param == "async")
    try:
        yield rec
    finally:
        await rec.aclose()
