"""The client core on both twins: retries and backoff, timeouts, error mapping, options, secret hygiene,
streams, and a connection-leak check against a real local HTTP server.

Retry delays are recorded, not slept: `time.sleep` / `_asleep` are replaced in `osbox._base_client`.
"""

from __future__ import annotations

import email.utils
import io
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import IO, Any, ClassVar

import httpx2
import pytest

import osbox
from osbox import STOP, AsyncLifecycleClient, AsyncStream, ExecdClient, LifecycleClient, Stream
from osbox._async.client import AsyncAPIClient
from osbox._base_client import shared_ssl_context
from osbox._operation import APIRequest, StreamRequest, adapter
from osbox._streaming import StreamFolder
from osbox._sync.client import SyncAPIClient

from .conftest import BASE_URL, ChunkStream, Recorder

API_KEY = "sk-core-secret-5f2e9a"


# -- a small client exercising the core -----------------------------------------------------------


class FileSink:
    """The least a download sink is: told the answer has come, then handed each chunk."""

    def __init__(self, file: IO[bytes]) -> None:
        self.write = file.write

    def begin(self, response: httpx2.Response) -> None:
        pass


class EventList(StreamFolder[dict[str, Any], list[dict[str, Any]]]):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def result(self) -> list[dict[str, Any]]:
        return self.events


def fetch_request(name: str) -> APIRequest[dict[str, Any]]:
    return APIRequest("GET", f"/{name}", parse=adapter(dict[str, Any]))


def submit_request() -> APIRequest[dict[str, Any]]:
    return APIRequest("POST", "/thing", json={"x": 1}, parse=adapter(dict[str, Any]))


def download_request(name: str, dest: IO[bytes]) -> APIRequest[None]:
    return APIRequest("GET", f"/{name}", download_to=FileSink(dest), parse=lambda _: None)


def watch_request(method: str, path: str) -> StreamRequest[dict[str, Any], list[Any]]:
    return StreamRequest(
        APIRequest(method, path, parse=lambda _: None), event=lambda obj: obj, new_folder=EventList
    )


class CoreClient(SyncAPIClient):
    _auth_header: ClassVar[str] = "OPEN-SANDBOX-API-KEY"

    def fetch(self, name: str = "thing") -> dict[str, Any]:
        return self._call(fetch_request(name))

    def submit(self) -> dict[str, Any]:
        return self._call(submit_request())

    def download(self, name: str, dest: IO[bytes]) -> None:
        return self._call(download_request(name, dest))

    def watch(self, method: str = "GET", path: str = "/watch") -> Stream[dict[str, Any], list[Any]]:
        return self._stream(watch_request(method, path))


class AsyncCoreClient(AsyncAPIClient):
    _auth_header: ClassVar[str] = "OPEN-SANDBOX-API-KEY"

    async def fetch(self, name: str = "thing") -> dict[str, Any]:
        return await self._call(fetch_request(name))

    async def submit(self) -> dict[str, Any]:
        return await self._call(submit_request())

    async def download(self, name: str, dest: IO[bytes]) -> None:
        return await self._call(download_request(name, dest))

    def watch(self, method: str = "GET", path: str = "/watch") -> AsyncStream[dict[str, Any], list[Any]]:
        return self._stream(watch_request(method, path))


def core(twin: Recorder, **options: Any) -> Any:
    return twin.client(CoreClient, AsyncCoreClient, BASE_URL, API_KEY, **options)


@pytest.fixture
def delays(twin: Recorder, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Delays the retry loop asked for, in order; nothing actually sleeps."""
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(seconds)

    async def asleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("osbox._base_client.time", SimpleNamespace(sleep=sleep))
    monkeypatch.setattr("osbox._base_client._asleep", asleep)
    return recorded


def failing(exc: type[httpx2.TransportError]) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc("simulated", request=request)

    return handler


# -- retries --------------------------------------------------------------------------------------


async def test_exponential_backoff_with_jitter(twin: Recorder, delays: list[float]) -> None:
    for _ in range(3):
        twin.reply(503)
    twin.reply(json={"ok": True})
    client = core(twin, max_retries=3)
    assert await twin.call(client.fetch()) == {"ok": True}
    assert len(twin.requests) == 4
    assert len(delays) == 3
    for attempt, delay in enumerate(delays):
        base = 0.5 * 2**attempt
        assert base * 0.75 <= delay <= base * 1.25


async def test_backoff_is_capped(twin: Recorder, delays: list[float]) -> None:
    for _ in range(7):
        twin.reply(503)
    twin.reply(json={})
    client = core(twin, max_retries=7)
    await twin.call(client.fetch())
    assert max(delays) <= 8.0 * 1.25
    assert delays[-1] >= 8.0 * 0.75


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_transient_statuses_are_retried_for_get(
    twin: Recorder, delays: list[float], status: int
) -> None:
    twin.reply(status)
    twin.reply(json={"ok": 1})
    client = core(twin)
    assert await twin.call(client.fetch()) == {"ok": 1}
    assert len(twin.requests) == 2
    assert len(delays) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 409, 500, 501])
async def test_other_statuses_are_not_retried(twin: Recorder, delays: list[float], status: int) -> None:
    twin.reply(status, json={"code": "X", "message": "no"})
    client = core(twin)
    with pytest.raises(osbox.APIStatusError):
        await twin.call(client.fetch())
    assert len(twin.requests) == 1
    assert delays == []


@pytest.mark.parametrize("status", [408, 502, 504])
async def test_post_is_not_retried_when_it_may_have_run(
    twin: Recorder, delays: list[float], status: int
) -> None:
    twin.reply(status)
    client = core(twin)
    with pytest.raises(osbox.APIStatusError) as caught:
        await twin.call(client.submit())
    assert caught.value.status_code == status
    assert len(twin.requests) == 1
    assert delays == []


@pytest.mark.parametrize("status", [429, 503])
async def test_post_is_retried_when_it_was_not_processed(
    twin: Recorder, delays: list[float], status: int
) -> None:
    twin.reply(status)
    twin.reply(json={"done": True})
    client = core(twin)
    assert await twin.call(client.submit()) == {"done": True}
    assert [r.method for r in twin.requests] == ["POST", "POST"]
    assert twin.requests[1].content == b'{"x":1}'


async def test_post_is_retried_after_a_connect_error(twin: Recorder, delays: list[float]) -> None:
    twin.reply_with(failing(httpx2.ConnectError))
    twin.reply(json={"done": True})
    client = core(twin)
    assert await twin.call(client.submit()) == {"done": True}
    assert len(twin.requests) == 2
    assert len(delays) == 1


@pytest.mark.parametrize("exc", [httpx2.ReadError, httpx2.RemoteProtocolError, httpx2.ReadTimeout])
async def test_post_is_not_retried_after_the_request_left(
    twin: Recorder, delays: list[float], exc: type[httpx2.TransportError]
) -> None:
    twin.reply_with(failing(exc))
    client = core(twin)
    with pytest.raises(osbox.APIConnectionError):
        await twin.call(client.submit())
    assert len(twin.requests) == 1
    assert delays == []


async def test_get_is_retried_after_a_read_error(twin: Recorder, delays: list[float]) -> None:
    twin.reply_with(failing(httpx2.ReadError))
    twin.reply(json={"ok": 2})
    client = core(twin)
    assert await twin.call(client.fetch()) == {"ok": 2}
    assert len(twin.requests) == 2


async def test_max_retries_is_respected(twin: Recorder, delays: list[float]) -> None:
    twin.respond_with(lambda request: httpx2.Response(503, json={"code": "BUSY", "message": "later"}))
    client = core(twin, max_retries=2)
    with pytest.raises(osbox.InternalServerError) as caught:
        await twin.call(client.fetch())
    assert caught.value.code == "BUSY"
    assert len(twin.requests) == 3
    assert len(delays) == 2

    twin.requests.clear()
    delays.clear()
    with pytest.raises(osbox.InternalServerError):
        await twin.call(client.with_options(max_retries=0).fetch())
    assert len(twin.requests) == 1
    assert delays == []


async def test_retry_after_seconds_is_honoured(twin: Recorder, delays: list[float]) -> None:
    twin.reply(429, headers={"Retry-After": "5"})
    twin.reply(json={})
    client = core(twin)
    await twin.call(client.fetch())
    assert delays == [5.0]


async def test_retry_after_http_date_is_honoured(twin: Recorder, delays: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    twin.reply(503, headers={"Retry-After": when})
    twin.reply(json={})
    client = core(twin)
    await twin.call(client.fetch())
    assert len(delays) == 1
    assert 10 < delays[0] <= 20


async def test_retry_after_ms_is_honoured(twin: Recorder, delays: list[float]) -> None:
    twin.reply(429, headers={"Retry-After-Ms": "2500"})
    twin.reply(json={})
    client = core(twin)
    await twin.call(client.fetch())
    assert delays == [2.5]


async def test_shorter_retry_after_does_not_shorten_backoff(twin: Recorder, delays: list[float]) -> None:
    twin.reply(429, headers={"Retry-After": "0"})
    twin.reply(json={})
    client = core(twin)
    await twin.call(client.fetch())
    assert 0.375 <= delays[0] <= 0.625


async def test_too_long_retry_after_raises_at_once(twin: Recorder, delays: list[float]) -> None:
    twin.reply(429, headers={"Retry-After": "3600", "X-Request-ID": "r-9"})
    client = core(twin)
    with pytest.raises(osbox.RateLimitError) as caught:
        await twin.call(client.fetch())
    assert caught.value.retry_after == 3600.0
    assert caught.value.request_id == "r-9"
    assert delays == []


# -- transport errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [httpx2.ReadTimeout, httpx2.ConnectTimeout, httpx2.PoolTimeout])
async def test_timeouts_raise_api_timeout_error(
    twin: Recorder, delays: list[float], exc: type[httpx2.TransportError]
) -> None:
    twin.respond_with(failing(exc))
    client = core(twin, max_retries=1)
    with pytest.raises(osbox.APITimeoutError) as caught:
        await twin.call(client.fetch())
    assert "timed out" in str(caught.value)
    assert caught.value.request is not None
    assert len(twin.requests) == 2


async def test_connection_errors_raise_api_connection_error(twin: Recorder, delays: list[float]) -> None:
    twin.respond_with(failing(httpx2.ConnectError))
    client = core(twin, max_retries=0)
    with pytest.raises(osbox.APIConnectionError) as caught:
        await twin.call(client.fetch())
    assert not isinstance(caught.value, osbox.APITimeoutError)
    assert "base_url" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


# -- options and pools ----------------------------------------------------------------------------


async def test_per_client_headers_and_with_options(twin: Recorder) -> None:
    client = core(twin, headers={"X-Team": "a"})
    scoped = client.with_options(headers={"X-Team": "b", "X-Trace": "t"}, timeout=5.0)
    await twin.call(client.fetch())
    assert twin.last.headers["X-Team"] == "a"
    assert "X-Trace" not in twin.last.headers
    await twin.call(scoped.fetch())
    assert twin.last.headers["X-Team"] == "b"
    assert twin.last.headers["X-Trace"] == "t"
    assert twin.last.headers["OPEN-SANDBOX-API-KEY"] == API_KEY
    assert twin.last.extensions["timeout"]["read"] == 5.0
    assert client.timeout.read == 30.0


async def _close(client: Any) -> None:
    await Recorder.call(client.aclose() if isinstance(client, AsyncAPIClient) else client.close())


async def test_with_options_shares_the_pool_and_does_not_close_it(twin: Recorder) -> None:
    client = twin.client(CoreClient, AsyncCoreClient, BASE_URL, API_KEY, http_client=None)
    try:
        scoped = client.with_options(max_retries=5)
        assert scoped._http is client._http
        assert scoped.max_retries == 5
        assert client.max_retries == 2
        await _close(scoped)
        assert not client._http.is_closed
    finally:
        await _close(client)
    assert client._http.is_closed


async def test_a_passed_in_http_client_is_not_closed(twin: Recorder) -> None:
    http = twin.http_client()
    client = twin.client(CoreClient, AsyncCoreClient, BASE_URL, API_KEY, http_client=http)
    await _close(client)
    assert not http.is_closed


def test_context_managers_close_owned_pools() -> None:
    with LifecycleClient(BASE_URL, API_KEY) as client:
        pool = client._http
    assert pool.is_closed


async def test_async_context_manager_closes_owned_pool() -> None:
    async with AsyncLifecycleClient(BASE_URL, API_KEY) as client:
        pool = client._http
    assert pool.is_closed


def test_missing_base_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="base_url is required"):
        CoreClient("", API_KEY)


# -- secret hygiene -------------------------------------------------------------------------------


async def test_api_key_not_in_repr_errors_or_logs(
    twin: Recorder, delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    twin.reply(503, json={"code": "BUSY", "message": "later"})
    twin.reply(401, json={"code": "INVALID_API_KEY", "message": "bad key"})
    twin.reply_with(failing(httpx2.ConnectError))
    client = twin.client(LifecycleClient, AsyncLifecycleClient, BASE_URL, API_KEY, max_retries=1)
    texts = [repr(client), repr(client.with_options(timeout=1))]
    with pytest.raises(osbox.AuthenticationError) as auth_error:
        await twin.call(client.get_sandbox("sbx-1"))
    with pytest.raises(osbox.APIConnectionError) as conn_error:
        await twin.call(client.with_options(max_retries=0).get_sandbox("sbx-1"))
    for error in (auth_error.value, conn_error.value):
        texts += [str(error), repr(error), error.message]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    assert any("retrying" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert API_KEY not in text


# -- streams --------------------------------------------------------------------------------------


def ndjson(*objects: str) -> list[bytes]:
    return [f"{obj}\n".encode() for obj in objects]


async def test_stream_sends_event_stream_accept_and_yields_events(twin: Recorder) -> None:
    twin.reply(stream=ChunkStream([b'data: {"type": "a"}\n\n', b'{"type": "b"}\n', b'{"type":', b' "c"}\n']))
    client = core(twin)
    events = await twin.collect(client.watch())
    assert [e["type"] for e in events] == ["a", "b", "c"]
    assert twin.last.headers["Accept"] == "text/event-stream"
    assert twin.last.headers["OPEN-SANDBOX-API-KEY"] == API_KEY


async def test_stream_as_context_manager(twin: Recorder) -> None:
    body = ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}'))
    twin.reply(stream=body)
    client = core(twin)
    stream = client.watch()
    if twin.is_async:
        async with stream:
            events = [event async for event in stream]
    else:
        with stream:
            events = list(stream)
    assert len(events) == 2
    assert body.closed


async def test_empty_stream_is_an_error(twin: Recorder) -> None:
    twin.reply(stream=ChunkStream([b"\n", b": keep-alive\n\n"]))
    client = core(twin)
    with pytest.raises(osbox.StreamError, match="without any event"):
        await twin.collect(client.watch())


async def test_trailing_error_object_raises_with_its_code(twin: Recorder) -> None:
    twin.reply(stream=ChunkStream(ndjson('{"type": "init"}', '{"code": "RUNTIME_ERROR", "message": "oom"}')))
    client = core(twin)
    seen: list[Any] = []
    with pytest.raises(osbox.StreamError) as caught:
        await twin.call(client.watch().run(on_event=seen.append))
    assert caught.value.code == "RUNTIME_ERROR"
    assert caught.value.server_message == "oom"
    assert "RUNTIME_ERROR" in str(caught.value)
    assert [e["type"] for e in seen] == ["init"]


async def test_invalid_json_in_a_stream_is_a_stream_error(twin: Recorder) -> None:
    twin.reply(stream=ChunkStream([b"data: {not json\n\n"]))
    client = core(twin)
    with pytest.raises(osbox.StreamError, match="not valid JSON"):
        await twin.collect(client.watch())


async def test_handler_exception_propagates_and_closes(twin: Recorder) -> None:
    body = ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}', '{"type": "c"}'))
    twin.reply(stream=body)
    client = core(twin)

    def handler(event: dict[str, Any]) -> None:
        raise RuntimeError(f"boom on {event['type']}")

    with pytest.raises(RuntimeError, match="boom on a"):
        await twin.call(client.watch().run(on_event=handler))
    assert body.closed
    assert body.sent < 3


async def test_stop_ends_early_and_closes_the_response(twin: Recorder) -> None:
    body = ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}', '{"type": "c"}'))
    twin.reply(stream=body)
    client = core(twin)
    result = await twin.call(client.watch().run(on_event=lambda event: STOP))
    assert [e["type"] for e in result] == ["a"]
    assert body.closed
    assert body.sent < 3


async def test_async_handler_may_return_stop(arecorder: Recorder) -> None:
    body = ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}'))
    arecorder.reply(stream=body)
    client = arecorder.client(CoreClient, AsyncCoreClient, BASE_URL, API_KEY)

    async def handler(event: dict[str, Any]) -> object:
        return STOP

    result = await client.watch().run(on_event=handler)
    assert len(result) == 1
    assert body.closed


async def test_breaking_out_of_iteration_closes_the_response(twin: Recorder) -> None:
    body = ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}', '{"type": "c"}'))
    twin.reply(stream=body)
    client = core(twin)
    stream = client.watch()
    if twin.is_async:
        async with stream:
            async for _ in stream:
                break
    else:
        with stream:
            for _ in stream:
                break
    assert body.closed
    with pytest.raises(osbox.StreamError, match="closed"):
        await twin.collect(stream)


async def test_stream_retried_before_the_first_byte(twin: Recorder, delays: list[float]) -> None:
    twin.reply(503)
    twin.reply(stream=ChunkStream(ndjson('{"type": "a"}')))
    client = core(twin)
    assert len(await twin.collect(client.watch())) == 1
    assert len(twin.requests) == 2
    assert len(delays) == 1


async def test_stream_post_not_retried_after_502(twin: Recorder, delays: list[float]) -> None:
    twin.reply(502)
    client = core(twin)
    with pytest.raises(osbox.InternalServerError):
        await twin.collect(client.watch(method="POST"))
    assert len(twin.requests) == 1


async def test_stream_never_retried_mid_stream(twin: Recorder, delays: list[float]) -> None:
    twin.reply(stream=ChunkStream(ndjson('{"type": "a"}', '{"type": "b"}'), fail_after=1))
    twin.reply(stream=ChunkStream(ndjson('{"type": "again"}')))
    client = core(twin)
    seen: list[Any] = []
    with pytest.raises(osbox.APIConnectionError):
        await twin.call(client.watch().run(on_event=seen.append))
    assert [e["type"] for e in seen] == ["a"]
    assert len(twin.requests) == 1
    assert delays == []


# -- against a real local HTTP server -------------------------------------------------------------

_SERVER = r"""
import gzip, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SANDBOX = json.dumps({"id": "sbx-1", "status": {"state": "Running"}, "entrypoint": ["sh"],
                      "createdAt": "2026-01-01T00:00:00Z"}).encode()
LINES = b"".join(b'{"type": "stdout", "text": "line %d"}\n' % i for i in range(5000))
BLOB = bytes(range(256)) * 20000 + b"tail"
GZIPPED = gzip.compress(BLOB)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK stall

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        if self.path.startswith("/v1/sandboxes/missing"):
            self._send(404, b'{"code": "NOT_FOUND", "message": "no such sandbox"}')
        elif self.path.startswith("/v1/sandboxes/"):
            self._send(200, SANDBOX)
        elif self.path == "/v1/blob":
            self._send(200, BLOB, "application/octet-stream")
        elif self.path == "/v1/blob-gzip":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(GZIPPED)))
            self.end_headers()
            self.wfile.write(GZIPPED)
        elif self.path == "/v1/headers":
            self._send(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())
        elif self.path == "/v1/watch":
            self._send(200, LINES, "application/x-ndjson")
        elif self.path == "/v1/hang":
            time.sleep(60)  # never answers in time: the client's timeout fires first
        else:
            self._send(404, b"not found", "text/plain")

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.handle_error = lambda self, request, address: None  # resets by aborted streams
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A tiny threaded HTTP server in a child process (its sockets do not count in our fd table)."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_leak_sync(server_url: str) -> None:
    before = open_fds()
    with CoreClient(server_url, API_KEY, max_retries=0) as client:
        lifecycle = LifecycleClient(server_url, API_KEY, http_client=client._http)
        for _ in range(5):
            lifecycle.get_sandbox("sbx-1")
        warm = open_fds()
        for i in range(1200):
            assert lifecycle.get_sandbox(f"sbx-{i}").id == "sbx-1"
        for _ in range(100):
            with pytest.raises(osbox.NotFoundError):
                lifecycle.get_sandbox("missing")
        for _ in range(150):
            for _event in client.watch():
                break  # abort the stream after its first event
        for _ in range(50):
            assert client.watch().run(on_event=lambda event: STOP)
        assert open_fds() <= warm + 2
    assert open_fds() <= before + 1


async def test_no_descriptor_leak_async(server_url: str) -> None:
    before = open_fds()
    async with AsyncCoreClient(server_url, API_KEY, max_retries=0) as client:
        lifecycle = AsyncLifecycleClient(server_url, API_KEY, http_client=client._http)
        for _ in range(5):
            await lifecycle.get_sandbox("sbx-1")
        warm = open_fds()
        for i in range(600):
            assert (await lifecycle.get_sandbox(f"sbx-{i}")).id == "sbx-1"
        for _ in range(50):
            with pytest.raises(osbox.NotFoundError):
                await lifecycle.get_sandbox("missing")
        for _ in range(100):
            async for _event in client.watch():
                break
        for _ in range(50):
            assert await client.watch().run(on_event=lambda event: STOP)
        assert open_fds() <= warm + 2
    assert open_fds() <= before + 1


def test_real_read_timeout_raises_api_timeout_error(server_url: str) -> None:
    with (
        CoreClient(server_url, API_KEY, timeout=0.3, max_retries=0) as client,
        pytest.raises(osbox.APITimeoutError, match="timed out"),
    ):
        client.fetch("hang")


async def test_real_refused_connection_raises_api_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    async with AsyncCoreClient(f"http://127.0.0.1:{port}", API_KEY, max_retries=0) as client:
        with pytest.raises(osbox.APIConnectionError) as caught:
            await client.fetch()
    assert not isinstance(caught.value, osbox.APITimeoutError)
    assert API_KEY not in str(caught.value)


async def test_owned_pool_sends_client_headers_and_with_options_overrides_them(server_url: str) -> None:
    """A pool osbox creates carries the client's headers; a clone with other headers still sends its own."""
    async with AsyncCoreClient(server_url, API_KEY, headers={"X-Team": "a"}, max_retries=0) as client:
        scoped = client.with_options(headers={"X-Team": "b"})
        sent = await client.fetch("headers")
        assert sent["x-team"] == "a" and sent["open-sandbox-api-key"] == API_KEY
        assert sent["user-agent"].startswith("osbox-python/") and sent["accept"] == "application/json"
        sent = await scoped.fetch("headers")
        assert sent["x-team"] == "b" and sent["open-sandbox-api-key"] == API_KEY
        assert (await client.fetch("headers"))["x-team"] == "a"
    with CoreClient(server_url, API_KEY, max_retries=0) as sync_client:
        assert sync_client.fetch("headers")["open-sandbox-api-key"] == API_KEY


def _ssl_context_of(client: Any) -> Any:
    return client._http._transport._pool._ssl_context  # httpx2 -> httpcore2 pool


async def test_default_clients_share_one_ssl_context() -> None:
    """Building an SSL context costs tens of ms: every client osbox creates reuses the process's one."""
    shared = shared_ssl_context()
    endpoint = SimpleNamespace(endpoint="127.0.0.1:44772", headers={"X-EXECD-ACCESS-TOKEN": "t"})
    with LifecycleClient(BASE_URL, API_KEY) as first, ExecdClient.from_endpoint(endpoint) as second:
        assert _ssl_context_of(first) is shared and _ssl_context_of(second) is shared
    async with AsyncLifecycleClient(BASE_URL, API_KEY) as third:
        assert _ssl_context_of(third) is shared
    assert shared_ssl_context() is shared


def test_a_passed_in_http_client_keeps_its_own_ssl_context() -> None:
    with httpx2.Client() as http, LifecycleClient(BASE_URL, API_KEY, http_client=http) as client:
        assert client._http is http
        assert _ssl_context_of(client) is not shared_ssl_context()


@pytest.mark.parametrize("encoded", [False, True], ids=["identity", "gzip"])
async def test_downloads_stream_the_body_as_sent_or_decoded(server_url: str, encoded: bool) -> None:
    """An unencoded body goes to the file in the transport's chunks; a gzip one is decoded on the way."""
    expected = bytes(range(256)) * 20000 + b"tail"
    name = "blob-gzip" if encoded else "blob"
    with CoreClient(server_url, API_KEY, max_retries=0) as client:
        sink = io.BytesIO()
        client.download(name, sink)
        assert sink.getvalue() == expected
    async with AsyncCoreClient(server_url, API_KEY, max_retries=0) as aclient:
        sink = io.BytesIO()
        await aclient.download(name, sink)
        assert sink.getvalue() == expected
