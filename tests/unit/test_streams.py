"""Streams on both twins: iteration, context manager and handler forms, STOP, async handlers, the three
framings, and release of the response however the consumer stops (checked on the transport's stream)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from osbox import (
    STOP,
    APIConnectionError,
    AsyncExecdClient,
    AsyncStream,
    BadRequestError,
    ExecdClient,
    FeatureNotSupportedError,
    NotFoundError,
    StreamError,
)
from osbox._async.file_watch import AsyncFileWatch
from osbox._execd import stream_event
from osbox._sync.file_watch import FileWatch
from osbox.models import Execution, StreamEvent
from tests.unit.conftest import ChunkStream, Recorder

BASE = "http://sandbox.test:44772"
OBJECTS: list[dict[str, Any]] = [
    {"type": "init", "text": "c1", "timestamp": 1},
    {"type": "stdout", "text": "one", "timestamp": 2},
    {"type": "ping", "text": "pong", "timestamp": 3},
    {"type": "stderr", "text": "two", "timestamp": 4},
    {"type": "stdout", "text": "three", "timestamp": 5},
    {"type": "execution_complete", "execution_time": 9, "timestamp": 6},
]
EXPECTED = Execution(
    id="c1", stdout="one\nthree\n", stderr="two\n", exit_code=0, duration_ms=9, complete=True
)


def bare_json(objs: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n\n" for o in objs)


def sse(objs: list[dict[str, Any]]) -> bytes:
    """Real SSE: comments, `retry:`, `id:`, the type as the event name, and JSON split over data lines."""
    out = [b": keepalive\nretry: 3000\n\n"]
    for n, obj in enumerate(objs):
        body = {k: v for k, v in obj.items() if k != "type"}
        text = json.dumps(body, indent=1).encode()
        data = b"".join(b"data: " + line + b"\r\n" for line in text.split(b"\n"))
        out.append(b"id: %d\r\nevent: %s\r\n" % (n, obj["type"].encode()) + data + b"\r\n")
    return b"".join(out)


def ndjson(objs: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def chunked(body: bytes, size: int) -> ChunkStream:
    return ChunkStream(body[i : i + size] for i in range(0, len(body), size))


def execd(rec: Recorder) -> Any:
    return rec.client(ExecdClient, AsyncExecdClient, BASE, "tok")


async def collect(stream: Any, *, stop_after: int | None = None) -> list[Any]:
    """The events of a stream through its context-manager form, leaving after `stop_after` events."""
    out: list[Any] = []
    if isinstance(stream, AsyncStream):
        async with stream:
            async for event in stream:
                out.append(event)
                if stop_after is not None and len(out) >= stop_after:
                    break
    else:
        with stream:
            for event in stream:
                out.append(event)
                if stop_after is not None and len(out) >= stop_after:
                    break
    return out


async def run(stream: Any, handler: Any = None) -> Any:
    return await Recorder.call(stream.run(handler))


async def close(stream: Any) -> None:
    await Recorder.call(stream.aclose() if isinstance(stream, AsyncStream) else stream.close())


# --- framings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", [bare_json, sse, ndjson])
@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 16])
async def test_every_framing_and_split_folds_the_same(twin: Recorder, framing: Any, chunk_size: int) -> None:
    twin.reply(stream=chunked(framing(OBJECTS), chunk_size))
    assert await run(execd(twin).run_command("x")) == EXPECTED
    assert twin.last.headers["Accept"] == "text/event-stream"


async def test_a_last_event_without_newline_is_not_lost(twin: Recorder) -> None:
    twin.reply(content=bare_json(OBJECTS).rstrip(b"\n"))
    assert (await run(execd(twin).run_command("x"))).complete


# --- the three forms ----------------------------------------------------------------------------------------


async def test_iteration_yields_typed_events_in_order_and_releases_the_response(twin: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS)])
    twin.reply(stream=body)
    events = await collect(execd(twin).run_command("x"))
    assert [e.type for e in events] == [o["type"] for o in OBJECTS]
    assert all(isinstance(e, StreamEvent) for e in events)
    assert events[1].text == "one" and events[1].timestamp == 2
    assert body.closed


def test_plain_for_loop_without_context_manager(recorder: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS)])
    recorder.reply(stream=body)
    assert len(list(execd(recorder).run_command("x"))) == len(OBJECTS)
    assert body.closed


async def test_plain_async_for_without_context_manager(arecorder: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS)])
    arecorder.reply(stream=body)
    assert len([e async for e in execd(arecorder).run_command("x")]) == len(OBJECTS)
    assert body.closed


async def test_nothing_is_sent_until_the_stream_is_used(twin: Recorder) -> None:
    stream = execd(twin).run_command("x")
    assert twin.requests == []
    twin.reply(content=bare_json(OBJECTS))
    await run(stream)
    assert len(twin.requests) == 1


async def test_handler_sees_every_event_and_run_returns_the_fold(twin: Recorder) -> None:
    twin.reply(content=bare_json(OBJECTS))
    seen: list[str] = []
    result = await run(execd(twin).run_command("x"), lambda e: seen.append(e.type))
    assert seen == [o["type"] for o in OBJECTS]
    assert result == EXPECTED


async def test_stop_ends_the_stream_early_with_the_result_so_far(twin: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS[:2]), bare_json(OBJECTS[2:4]), bare_json(OBJECTS[4:])])
    twin.reply(stream=body)
    result = await run(execd(twin).run_command("x"), lambda e: STOP if e.type == "stdout" else None)
    assert (result.id, result.stdout, result.complete) == ("c1", "one\n", False)
    assert body.closed
    assert body.sent == 1  # the rest of the body was never read


async def test_async_handlers_are_awaited(arecorder: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS[:2]), bare_json(OBJECTS[2:])])
    arecorder.reply(stream=body)
    seen: list[str] = []

    async def on_event(event: StreamEvent) -> object:
        seen.append(event.type)
        return STOP if event.type == "stdout" else None

    result = await execd(arecorder).run_command("x").run(on_event)
    assert seen == ["init", "stdout"]
    assert result.stdout == "one\n"
    assert body.closed


async def test_a_handler_error_stops_the_stream_and_propagates(twin: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS[:2]), bare_json(OBJECTS[2:])])
    twin.reply(stream=body)

    def on_event(event: StreamEvent) -> None:
        if event.type == "stdout":
            raise KeyError("handler failed")

    with pytest.raises(KeyError, match="handler failed"):
        await run(execd(twin).run_command("x"), on_event)
    assert body.closed
    assert body.sent == 1


# --- releasing the response ---------------------------------------------------------------------------------


async def test_leaving_the_context_manager_early_releases_the_response(twin: Recorder) -> None:
    body = chunked(bare_json(OBJECTS), 10)
    twin.reply(stream=body)
    events = await collect(execd(twin).run_command("x"), stop_after=1)
    assert [e.type for e in events] == ["init"]
    assert body.closed
    assert body.sent < len(body.chunks)


async def test_explicit_close_releases_the_response_and_is_idempotent(twin: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS)])
    twin.reply(stream=body)
    stream = execd(twin).run_command("x")
    if isinstance(stream, AsyncStream):
        await stream.__aenter__()
    else:
        stream.__enter__()
    await close(stream)
    await close(stream)
    assert body.closed
    with pytest.raises(StreamError, match="closed"):
        await run(stream)


class _Endless(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A metrics stream that never ends on its own, like `GET /metrics/watch`."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    def _line(self) -> bytes:
        self.sent += 1
        sample = {"cpu_count": 2, "cpu_used_pct": 1.0, "mem_total_mib": 1, "mem_used_mib": 1}
        return json.dumps({**sample, "timestamp": self.sent}).encode() + b"\n"

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self._line()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield self._line()

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


async def test_watch_metrics_stops_when_the_consumer_stops(twin: Recorder) -> None:
    body = _Endless()
    twin.reply(stream=body)
    samples = await collect(execd(twin).watch_metrics(), stop_after=3)
    assert [s.timestamp for s in samples] == [1, 2, 3]
    assert body.closed


async def test_watch_metrics_run_returns_the_last_sample_seen(twin: Recorder) -> None:
    body = _Endless()
    twin.reply(stream=body)
    last = await run(execd(twin).watch_metrics(), lambda m: STOP if m.timestamp == 4 else None)
    assert last.timestamp == 4
    assert body.closed


# --- failures -----------------------------------------------------------------------------------------------


async def test_a_broken_connection_mid_stream_is_a_connection_error(twin: Recorder) -> None:
    body = ChunkStream([bare_json(OBJECTS[:2]), bare_json(OBJECTS[2:])], fail_after=1)
    twin.reply(stream=body)
    with pytest.raises(APIConnectionError, match="broke while the answer was arriving"):
        await run(execd(twin).run_command("x"))
    assert body.closed


async def test_a_connection_broken_after_the_final_event_loses_nothing(twin: Recorder) -> None:
    # The command completed; the connection broke before the body's end (a proxy cut it, say).
    body = ChunkStream([bare_json(OBJECTS), b'{"type":"pi'], fail_after=1)
    twin.reply(stream=body)
    assert await run(execd(twin).run_command("x")) == EXPECTED
    assert body.closed
    twin.reply(stream=ChunkStream([bare_json(OBJECTS), b"more"], fail_after=1))
    events = await collect(execd(twin).run_command("x"))
    assert [event.type for event in events] == [obj["type"] for obj in OBJECTS]


async def test_an_error_status_before_the_stream_is_a_status_error(twin: Recorder) -> None:
    twin.reply(400, json={"code": "INVALID_REQUEST_BODY", "message": "cwd does not exist"})
    with pytest.raises(BadRequestError, match="cwd does not exist"):
        await run(execd(twin).run_command("x", cwd="/nope"))


async def test_invalid_json_in_the_stream_is_a_stream_error(twin: Recorder) -> None:
    twin.reply(content=bare_json(OBJECTS[:1]) + b"data: {not json\n\n")
    with pytest.raises(StreamError, match="not valid JSON"):
        await run(execd(twin).run_command("x"))


# --- stream folding -----------------------------------------------------------------------------------------


async def test_exit_codes_fold(twin: Recorder) -> None:
    failed = bare_json(
        [
            {"type": "init", "text": "c1"},
            {"type": "stderr", "text": "boom"},
            {
                "type": "error",
                "error": {"ename": "CommandExecError", "evalue": "3", "traceback": ["exit status 3"]},
            },
        ]
    )
    twin.reply(content=failed)
    result = await run(execd(twin).run_command("exit 3"))
    assert (result.exit_code, result.stderr, result.complete) == (3, "boom\n", True)
    assert result.error.traceback == ["exit status 3"]


async def test_rich_results_are_kept(twin: Recorder) -> None:
    bundle = {"text": "<Figure>", "image/png": "iVBORw0KGgo=", "text/html": "<b>x</b>"}
    twin.reply(
        content=bare_json(
            [
                {"type": "init", "text": "k1"},
                {"type": "stdout", "text": "partial"},
                {"type": "execution_count", "execution_count": 4},
                {"type": "result", "results": bundle},
                {"type": "execution_complete", "execution_time": 12},
            ]
        )
    )
    result = await run(execd(twin).execute_code("plot()", context_id="k1", language="python"))
    assert result.results == [bundle]
    assert result.execution_count == 4
    assert result.stdout == "partial"  # kernel chunks are kept verbatim


@pytest.mark.parametrize(
    "bundle",
    [{"text": "4"}, {"text/plain": "4"}, {"text/plain": "4", "text": "4"}],
    ids=["reference", "spec", "osbox"],
)
async def test_results_read_the_same_from_every_kind_of_server(
    twin: Recorder, bundle: dict[str, str]
) -> None:
    """The reference renames `text/plain` to `text`, the spec keeps MIME keys, osbox sends both."""
    twin.reply(content=bare_json([{"type": "result", "results": bundle}, {"type": "execution_complete"}]))
    sent = execd(twin).execute_code("2 + 2", context_id="k1", language="python", timeout=2.5)
    (result,) = (await run(sent)).results
    assert result == bundle and result.text == "4" and result.data == {"text/plain": "4"}
    assert (result.html, result.png) == (None, None)
    assert json.loads(twin.requests[-1].content)["timeout"] == 2500  # the osbox extension, in ms


async def test_trailing_error_object_raises_with_its_code(twin: Recorder) -> None:
    twin.reply(
        content=bare_json(
            [{"type": "init", "text": "k1"}, {"code": "RUNTIME_ERROR", "message": "session is busy"}]
        )
    )
    with pytest.raises(StreamError) as info:
        await run(execd(twin).execute_code("x", context_id="k1", language="python"))
    assert info.value.code == "RUNTIME_ERROR"
    assert "session is busy" in str(info.value)


async def test_empty_command_stream_is_an_error_but_empty_metrics_are_not(twin: Recorder) -> None:
    twin.reply(content=b"")
    with pytest.raises(StreamError, match="without any event"):
        await run(execd(twin).run_command("true"))
    twin.reply(content=b"")
    assert await run(execd(twin).watch_metrics()) is None


async def test_malformed_event_is_a_stream_error(twin: Recorder) -> None:
    twin.reply(content=bare_json([{"type": "result", "results": "not a map"}]))
    with pytest.raises(StreamError, match="malformed StreamEvent"):
        await run(execd(twin).run_command("x"))


@pytest.mark.parametrize(
    ("obj", "wire"),
    [
        ({"type": "stdout", "text": "hi", "timestamp": 5}, {"type": "stdout", "text": "hi", "timestamp": 5}),
        ({"type": "stderr", "text": ""}, {"type": "stderr", "text": ""}),
        ({"type": "ping", "text": "pong", "timestamp": 9}, {"type": "ping", "text": "pong", "timestamp": 9}),
        ({"type": "stdout", "text": "x", "extra": 1}, {"type": "stdout", "text": "x", "extra": 1}),
        (
            {"type": "error", "error": {"ename": "E", "evalue": "v"}},
            {"type": "error", "error": {"ename": "E", "evalue": "v"}},
        ),
        ({"text": "untyped"}, {"type": "", "text": "untyped"}),
        (
            {"type": "result", "results": {"image/png": "iVBOR", "text": "<Figure>"}, "execution_count": 2},
            {"type": "result", "results": {"image/png": "iVBOR", "text": "<Figure>"}, "execution_count": 2},
        ),
    ],
)
def test_stream_event_from_wire_round_trips(obj: dict[str, Any], wire: dict[str, Any]) -> None:
    event = stream_event(dict(obj))
    assert event.to_wire() == wire
    assert event == StreamEvent(
        **{k: v for k, v in obj.items() if k not in ("error", "extra")} | {"type": wire["type"]},
        error=event.error,
        extra=event.extra,
    )


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "stdout", "text": 5},
        {"type": "stdout", "timestamp": True},
        {"type": "stdout", "timestamp": "noon"},
        {"type": "result", "results": "not a map"},
        {"type": 3},
        {"type": "error", "error": "boom"},
    ],
)
def test_stream_event_with_wrong_field_types_is_malformed(obj: dict[str, Any]) -> None:
    with pytest.raises(StreamError, match="malformed"):
        stream_event(dict(obj))


# --- files.watch ---------------------------------------------------------------------------------------


def file_watch(twin: Recorder, path: str) -> Any:
    """`AsyncFileWatch` / `FileWatch` over the twin's execd client, started (as `files.watch` does)."""
    watch_class = AsyncFileWatch if twin.is_async else FileWatch
    return Recorder.call(watch_class(execd(twin), path, recursive=True)._start())


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, "404 page not found"),
        (404, '{"code":"NOT_FOUND","message":"GET /files/watch: Not Found"}'),
        (405, ""),
    ],
)
async def test_files_watch_against_a_server_without_it_raises_a_clear_typed_error(
    twin: Recorder, status: int, body: str
) -> None:
    twin.reply(status, content=body)
    with pytest.raises(FeatureNotSupportedError, match="osbox serve"):
        await file_watch(twin, "/workspace")
    assert twin.last.url.path == "/files/watch" and twin.last.url.params["recursive"] == "true"


async def test_files_watch_yields_only_changes_and_a_missing_path_names_it(twin: Recorder) -> None:
    events: list[dict[str, Any]] = [
        {"type": "init", "text": "/w"},
        {"type": "ping", "text": "pong"},
        {"type": "move", "path": "/w/b", "old_path": "/w/a", "is_dir": False},
    ]
    twin.reply(content=bare_json(events))
    watch = await file_watch(twin, "/w")
    if isinstance(watch, AsyncFileWatch):
        async with watch:
            changes = [event async for event in watch]
    else:
        with watch:
            changes = list(watch)
    assert [(e.type, e.path, e.old_path) for e in changes] == [("move", "/w/b", "/w/a")]
    twin.reply(404, json={"code": "FILE_NOT_FOUND", "message": "no such file"})
    with pytest.raises(NotFoundError, match="/gone does not exist"):
        await file_watch(twin, "/gone")
