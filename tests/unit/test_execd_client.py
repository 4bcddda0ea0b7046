"""ExecdClient / AsyncExecdClient over httpx2.MockTransport: every operation on both twins, checked
against execd-api.yaml, plus the execd behaviours of the Go SDK's checklist (sdk-behaviour.md §1)."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
import yaml  # type: ignore[import-untyped]

from osbox import (
    AsyncExecdClient,
    CommandLogs,
    DownloadResult,
    ExecdClient,
    FileUpload,
    NotFoundError,
)
from osbox.models import Endpoint, Execution
from osbox.models.execd import CodeContext, CommandStatusResponse, FileInfo, Metrics
from tests.spec_check import SPEC_FILES, SpecCheck, require_specs
from tests.unit.conftest import Recorder

BASE = "http://sandbox.test:44772/proxy/44772"
TOKEN = "execd-t0ken"
METRICS: dict[str, Any] = {
    "cpu_count": 2,
    "cpu_used_pct": 12.5,
    "mem_total_mib": 2048,
    "mem_used_mib": 512,
    "timestamp": 1,
}
FILE_INFO: dict[str, Any] = {
    "path": "/w/a.py",
    "type": "file",
    "size": 3,
    "modified_at": "2025-11-16T14:30:45Z",
    "created_at": "2025-11-16T14:30:45Z",
    "owner": "root",
    "group": "root",
    "mode": 644,
}


def events(*objs: dict[str, Any]) -> bytes:
    """A stream body the way the reference execd frames it: bare JSON objects and blank lines."""
    return b"".join(json.dumps(o).encode() + b"\n\n" for o in objs)


COMMAND_OK = events(
    {"type": "init", "text": "c" * 32, "timestamp": 1},
    {"type": "stdout", "text": "hello", "timestamp": 2},
    {"type": "execution_complete", "execution_time": 7, "timestamp": 3},
)


def client(rec: Recorder, **kwargs: Any) -> Any:
    return rec.client(ExecdClient, AsyncExecdClient, BASE, TOKEN, **kwargs)


async def run(value: Any) -> Any:
    """Drive an operation: a stream is run to its folded result, anything else awaited if needed."""
    if hasattr(value, "run"):
        value = value.run()
    return await Recorder.call(value)


def query(request: httpx2.Request) -> list[tuple[str, str]]:
    return request.url.params.multi_items()


@dataclass
class Case:
    """One operation: how to call it, what to answer, what must go on the wire, what comes back."""

    call: Callable[[Any], Any]
    method: str
    path: str
    reply: dict[str, Any] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    result: Any = None
    accept: str = "application/json"


#: osbox's own routes, which the spec does not describe.
EXTENSION_PATHS = {"/files/watch"}
#: Operations on osbox's own execd routes (stdin, signals), which the spec does not have.
OSBOX_EXTENSIONS = {"send_command_stdin", "close_command_stdin", "signal_command"}

CASES: dict[str, Case] = {
    "ping": Case(lambda c: c.ping(), "GET", "/ping"),
    "get_metrics": Case(
        lambda c: c.get_metrics(), "GET", "/metrics", {"json": METRICS}, result=Metrics(**METRICS)
    ),
    "watch_metrics": Case(
        lambda c: c.watch_metrics(),
        "GET",
        "/metrics/watch",
        {"content": (json.dumps(METRICS) + "\n" + json.dumps({**METRICS, "timestamp": 2}) + "\n").encode()},
        result=Metrics(**{**METRICS, "timestamp": 2}),
        accept="text/event-stream",
    ),
    "watch_files": Case(
        lambda c: c.watch_files("/w", recursive=False),
        "GET",
        "/files/watch",
        {"content": b'{"type":"init","text":"/w"}\n\n{"type":"create","path":"/w/a","is_dir":false}\n\n'},
        params=[("path", "/w"), ("recursive", "false")],
        accept="text/event-stream",
    ),
    "run_command": Case(
        lambda c: c.run_command("ls", cwd="/tmp", timeout=1.5, uid=1000, gid=1000, envs={"A": "1"}),
        "POST",
        "/command",
        {"content": COMMAND_OK},
        body={
            "command": "ls",
            "background": False,
            "cwd": "/tmp",
            "timeout": 1500,
            "uid": 1000,
            "gid": 1000,
            "envs": {"A": "1"},
        },
        result=Execution(id="c" * 32, stdout="hello\n", exit_code=0, duration_ms=7, complete=True),
        accept="text/event-stream",
    ),
    "interrupt_command": Case(
        lambda c: c.interrupt_command("c1"), "DELETE", "/command", params=[("id", "c1")]
    ),
    "send_command_stdin": Case(
        lambda c: c.send_command_stdin("c1", b"data", eof=True),
        "POST",
        "/command/c1/stdin",
        params=[("eof", "true")],
    ),
    "close_command_stdin": Case(
        lambda c: c.close_command_stdin("c1"), "POST", "/command/c1/stdin", params=[("eof", "true")]
    ),
    "signal_command": Case(
        lambda c: c.signal_command("c1", "SIGINT"), "POST", "/command/c1/signal", body={"signal": "SIGINT"}
    ),
    "get_command_status": Case(
        lambda c: c.get_command_status("c1"),
        "GET",
        "/command/status/c1",
        {"json": {"id": "c1", "content": "sleep 9", "running": True, "started_at": "2025-11-16T14:30:45Z"}},
        result=CommandStatusResponse.model_validate(
            {"id": "c1", "content": "sleep 9", "running": True, "started_at": "2025-11-16T14:30:45Z"}
        ),
    ),
    "get_command_logs": Case(
        lambda c: c.get_command_logs("c1", cursor=42),
        "GET",
        "/command/c1/logs",
        {"content": b"line1\nline2\n", "headers": {"EXECD-COMMANDS-TAIL-CURSOR": "57"}},
        params=[("cursor", "42")],
        result=CommandLogs(text="line1\nline2\n", cursor="57"),
        accept="text/plain",
    ),
    "create_session": Case(
        lambda c: c.create_session(cwd="/w"),
        "POST",
        "/session",
        {"json": {"session_id": "s1"}},
        body={"cwd": "/w"},
        result="s1",
    ),
    "run_in_session": Case(
        lambda c: c.run_in_session("s1", "pwd", cwd="/x", timeout=2),
        "POST",
        "/session/s1/run",
        {"content": COMMAND_OK},
        body={"command": "pwd", "cwd": "/x", "timeout": 2000},
        accept="text/event-stream",
    ),
    "delete_session": Case(lambda c: c.delete_session("s1"), "DELETE", "/session/s1"),
    "list_contexts": Case(
        lambda c: c.list_contexts("python"),
        "GET",
        "/code/contexts",
        {"json": [{"id": "k1", "language": "python"}]},
        params=[("language", "python")],
        result=[CodeContext(id="k1", language="python")],
    ),
    "create_context": Case(
        lambda c: c.create_context("python"),
        "POST",
        "/code/context",
        {"json": {"id": "k1", "language": "python"}},
        body={"language": "python"},
        result=CodeContext(id="k1", language="python"),
    ),
    "get_context": Case(
        lambda c: c.get_context("k1"),
        "GET",
        "/code/contexts/k1",
        {"json": {"id": "k1", "language": "python"}},
        result=CodeContext(id="k1", language="python"),
    ),
    "delete_context": Case(lambda c: c.delete_context("k1"), "DELETE", "/code/contexts/k1"),
    "delete_contexts_by_language": Case(
        lambda c: c.delete_contexts_by_language("python"),
        "DELETE",
        "/code/contexts",
        params=[("language", "python")],
    ),
    "execute_code": Case(
        lambda c: c.execute_code("1+1", context_id="k1", language="python"),
        "POST",
        "/code",
        {"content": COMMAND_OK},
        body={"code": "1+1", "context": {"id": "k1", "language": "python"}},
        accept="text/event-stream",
    ),
    "interrupt_code": Case(lambda c: c.interrupt_code("k1"), "DELETE", "/code", params=[("id", "k1")]),
    "get_file_info": Case(
        lambda c: c.get_file_info(["/w/a.py", "/w/b c"]),
        "GET",
        "/files/info",
        {"json": {"/w/a.py": FILE_INFO}},
        params=[("path", "/w/a.py"), ("path", "/w/b c")],
        result={"/w/a.py": FileInfo(**FILE_INFO)},
    ),
    "delete_files": Case(
        lambda c: c.delete_files(["/a", "/b"]), "DELETE", "/files", params=[("path", "/a"), ("path", "/b")]
    ),
    "set_permissions": Case(
        lambda c: c.set_permissions({"/a": 0o755}), "POST", "/files/permissions", body={"/a": {"mode": 755}}
    ),
    "move_files": Case(
        lambda c: c.move_files([("/a", "/b/a")]), "POST", "/files/mv", body=[{"src": "/a", "dest": "/b/a"}]
    ),
    "search_files": Case(
        lambda c: c.search_files("/w", "*.py"),
        "GET",
        "/files/search",
        {"json": [FILE_INFO]},
        params=[("path", "/w"), ("pattern", "*.py")],
        result=[FileInfo(**FILE_INFO)],
    ),
    "replace_in_files": Case(
        lambda c: c.replace_in_files({"/a": ("x", "y")}, verbose=True),
        "POST",
        "/files/replace",
        {"json": {"/a": {"replacedCount": 2}}},
        params=[("verbose", "true")],
        body={"/a": {"old": "x", "new": "y"}},
        result={"/a": 2},
    ),
    "upload_file": Case(lambda c: c.upload_file("/w/a.txt", b"abc", mode=0o600), "POST", "/files/upload"),
    "upload_files": Case(
        lambda c: c.upload_files([FileUpload("/w/a", b"1"), FileUpload("/w/b", "2")]), "POST", "/files/upload"
    ),
    "download_file": Case(
        lambda c: c.download_file("/w/a.bin", io.BytesIO(), range=(0, 1)),
        "GET",
        "/files/download",
        {"status": 206, "content": b"ab", "headers": {"Content-Range": "bytes 0-1/10"}},
        params=[("path", "/w/a.bin")],
        result=DownloadResult(bytes_written=2, partial=True, content_range="bytes 0-1/10"),
        accept="application/octet-stream",
    ),
    "read_file": Case(
        lambda c: c.read_file("/w/a.bin"),
        "GET",
        "/files/download",
        {"content": b"\x00\x01"},
        params=[("path", "/w/a.bin")],
        result=b"\x00\x01",
        accept="application/octet-stream",
    ),
    "list_directory": Case(
        lambda c: c.list_directory("/w", depth=0),
        "GET",
        "/directories/list",
        {"json": []},
        params=[("path", "/w"), ("depth", "0")],
        result=[],
    ),
    "create_directory": Case(
        lambda c: c.create_directory("/w/d", mode=0o700, owner="app"),
        "POST",
        "/directories",
        body={"/w/d": {"owner": "app", "mode": 700}},
    ),
    "delete_directory": Case(
        lambda c: c.delete_directory("/w/d"), "DELETE", "/directories", params=[("path", "/w/d")]
    ),
}


def test_every_operation_has_a_case() -> None:
    from osbox import AsyncExecdClient
    from osbox._async.client import AsyncAPIClient

    operations = {
        n for n in dir(AsyncExecdClient) if not n.startswith("_") and not hasattr(AsyncAPIClient, n)
    }
    assert operations == set(CASES) | OUTSIDE_THE_SPEC


#: The reference execd's PTY routes, which execd-api.yaml leaves out (a WebSocket among them), and
#: osbox's `GET /pty` (list_pty): tested against a real server, both twins, in tests/integration/test_pty.py.
OUTSIDE_THE_SPEC = {"create_pty", "get_pty", "list_pty", "delete_pty", "connect_pty"}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_operation_on_both_twins(twin: Recorder, name: str) -> None:
    case = CASES[name]
    twin.reply(**case.reply)
    result = await run(case.call(client(twin)))

    request = twin.last
    assert (request.method, request.url.path) == (case.method, "/proxy/44772" + case.path)
    assert query(request) == case.params
    assert request.headers["X-EXECD-ACCESS-TOKEN"] == TOKEN
    assert request.headers["Accept"] == case.accept
    if case.body is not None:
        assert json.loads(request.content) == case.body
    if case.result is not None:
        assert result == case.result
    if case.path == "/files/upload":
        # openapi-core decodes the JSON `metadata` part and then rejects it (and the binary part) for
        # not being a string, whatever the request; the multipart tests check the declared encoding.
        assert_upload_matches_spec(request)
    elif case.path not in EXTENSION_PATHS and name not in OSBOX_EXTENSIONS:
        SpecCheck.load().request("execd", request, base_url=BASE)


# --- headers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["upload_file", "download_file", "get_command_logs", "run_command"])
async def test_custom_headers_reach_transfers_and_logs(twin: Recorder, name: str) -> None:
    case = CASES[name]
    twin.reply(**case.reply)
    await run(case.call(client(twin, headers={"X-Trace": "t-1"})))
    assert twin.last.headers["X-Trace"] == "t-1"
    assert twin.last.headers["X-EXECD-ACCESS-TOKEN"] == TOKEN


async def test_from_endpoint_forwards_every_endpoint_header(twin: Recorder) -> None:
    endpoint = Endpoint(
        endpoint="gw.test/sandboxes/s1/proxy/44772", headers={"X-EXECD-ACCESS-TOKEN": "tk", "X-Route": "r"}
    )
    cls = AsyncExecdClient if twin.is_async else ExecdClient
    execd = cls.from_endpoint(endpoint, http_client=twin.http_client())
    twin.reply(content=b"x")
    await run(execd.read_file("/f"))
    assert str(twin.last.url) == "http://gw.test/sandboxes/s1/proxy/44772/files/download?path=%2Ff"
    assert twin.last.headers["X-EXECD-ACCESS-TOKEN"] == "tk"
    assert twin.last.headers["X-Route"] == "r"
    assert "tk" not in repr(execd)


# --- request shapes -----------------------------------------------------------------------------------------


async def test_optional_arguments_stay_off_the_wire(twin: Recorder) -> None:
    execd = client(twin)
    twin.reply(content=COMMAND_OK)
    await run(execd.run_command("true"))
    assert twin.last_json() == {"command": "true", "background": False}
    twin.reply(json={"session_id": "s"})
    await run(execd.create_session())
    assert twin.last_json() == {}
    twin.reply(json=[])
    await run(execd.list_directory("/w"))
    assert query(twin.last) == [("path", "/w")]
    twin.reply(json=[])
    await run(execd.list_contexts())
    assert query(twin.last) == []
    twin.reply(content=b"all", headers={"EXECD-COMMANDS-TAIL-CURSOR": "3"})
    assert await run(execd.get_command_logs("c1")) == CommandLogs("all", "3")
    assert query(twin.last) == []
    twin.reply()
    assert await run(execd.replace_in_files({"/a": ("x", "y")})) is None
    assert query(twin.last) == []


async def test_log_cursor_is_opaque_and_kept_when_the_header_is_missing(twin: Recorder) -> None:
    twin.reply(content=b"more")
    assert await run(client(twin).get_command_logs("c1", cursor="opaque-7")) == CommandLogs(
        "more", "opaque-7"
    )
    assert query(twin.last) == [("cursor", "opaque-7")]


async def test_code_without_context_runs_as_shell(twin: Recorder) -> None:
    twin.reply(content=events({"type": "stdout", "text": "a"}, {"type": "execution_complete"}))
    result = await run(client(twin).execute_code("echo a"))
    assert twin.last_json() == {"code": "echo a"}
    assert result.stdout == "a\n"  # line-split shell output gets its newline back


async def test_background_command(twin: Recorder) -> None:
    twin.reply(content=events({"type": "init", "text": "b" * 32}, {"type": "execution_complete"}))
    result = await run(client(twin).run_command("sleep 100", background=True))
    assert twin.last_json()["background"] is True
    assert (result.id, result.exit_code) == ("b" * 32, 0)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.run_command("x", timeout=0), "timeout must be a positive"),
        (lambda c: c.run_command("x", timeout=-1.0), "timeout must be a positive"),
        (lambda c: c.run_command("x", gid=5), "gid requires uid"),
        (lambda c: c.delete_files([]), "at least one path"),
        (lambda c: c.list_directory("/w", depth=-1), "depth must be"),
        (lambda c: c.replace_in_files({"/a": ("", "y")}), "at least 1 character"),
        (lambda c: c.set_permissions({"/a": 0o17777}), "outside"),
        (lambda c: c.download_file("/a", io.BytesIO(), range=(5, 2)), "invalid byte range"),
        (lambda c: c.download_file("/a", io.BytesIO(), range=3), "must be negative"),
        (lambda c: c.interrupt_command(""), "required"),
        (lambda c: c.get_context(""), "non-empty"),
    ],
)
async def test_bad_arguments_fail_before_sending(twin: Recorder, call: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        await run(call(client(twin)))
    assert twin.requests == []


def test_timeout_rounds_up_to_a_whole_millisecond(recorder: Recorder) -> None:
    recorder.reply(content=COMMAND_OK)
    client(recorder).run_command("x", timeout=0.0001).run()
    assert recorder.last_json()["timeout"] == 1


async def test_status_errors_keep_the_server_code(twin: Recorder) -> None:
    twin.reply(404, json={"code": "CONTEXT_NOT_FOUND", "message": "no such context"})
    with pytest.raises(NotFoundError) as info:
        await run(client(twin).get_context("nope"))
    assert info.value.code == "CONTEXT_NOT_FOUND"


# --- uploads ------------------------------------------------------------------------------------------------


def multipart_parts(request: httpx2.Request) -> list[tuple[Any, Any, str, Any]]:
    """(field name, filename, content type, payload) of each part of a captured multipart body."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    assert message.is_multipart()
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get_content_type(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    ]


def assert_upload_matches_spec(request: httpx2.Request) -> None:
    """Each part's name and content type is one `execd-api.yaml` declares for `POST /files/upload`."""
    spec = yaml.safe_load((require_specs() / SPEC_FILES["execd"]).read_text())
    media = spec["paths"]["/files/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    declared = {name: enc["contentType"] for name, enc in media["encoding"].items()}
    parts = multipart_parts(request)
    assert parts, "no multipart parts"
    for name, _, ctype, _ in parts:
        assert declared[name] == ctype
    assert [name for name, *_ in parts] == ["metadata", "file"] * (len(parts) // 2)


async def test_upload_multipart_structure(twin: Recorder, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(b"\x00" * 100_000 + b"end")
    twin.reply()
    await run(
        client(twin).upload_files(
            [
                FileUpload("/w/run.sh", "#!/bin/sh\n", mode=0o755, owner="app", group="staff"),
                FileUpload("/w/data/big.bin", local),
            ]
        )
    )
    parts = multipart_parts(twin.last)
    assert [(name, filename, ctype) for name, filename, ctype, _ in parts] == [
        ("metadata", "metadata", "application/json"),
        ("file", "run.sh", "application/octet-stream"),
        ("metadata", "metadata", "application/json"),
        ("file", "big.bin", "application/octet-stream"),
    ]
    assert json.loads(parts[0][3]) == {"path": "/w/run.sh", "owner": "app", "group": "staff", "mode": 755}
    assert parts[1][3] == b"#!/bin/sh\n"
    assert json.loads(parts[2][3]) == {"path": "/w/data/big.bin"}
    assert parts[3][3] == local.read_bytes()
    assert_upload_matches_spec(twin.last)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _ReadTracker(io.BytesIO):
    largest_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.largest_read = max(self.largest_read, len(chunk))
        return chunk


async def test_upload_streams_file_objects_and_closes_what_it_opened(twin: Recorder, tmp_path: Path) -> None:
    local = tmp_path / "f.bin"
    local.write_bytes(os.urandom(300_000))
    source = _ReadTracker(local.read_bytes())
    execd = client(twin)
    before = _open_fds()
    twin.reply()
    await run(execd.upload_file("/w/f.bin", local))
    twin.reply()
    await run(execd.upload_file("/w/g.bin", source))
    assert _open_fds() == before
    assert 0 < source.largest_read < 300_000  # read in chunks, never whole
    assert not source.closed  # the caller's file object stays the caller's
    assert multipart_parts(twin.last)[1][3] == local.read_bytes()


class _Unseekable(io.RawIOBase):
    """A pipe-like binary stream: readable, not seekable, size unknown."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["bytes", "path", "file object", "unseekable"])
async def test_upload_progress_counts_up_to_the_size(twin: Recorder, tmp_path: Path, kind: str) -> None:
    data = os.urandom(200_000)
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    source: Any = {
        "bytes": data,
        "path": local,
        "file object": io.BytesIO(data),
        "unseekable": io.BufferedReader(_Unseekable(data)),
    }[kind]
    seen: list[tuple[int, int | None]] = []
    twin.reply()
    await run(
        client(twin).upload_file("/w/f.bin", source, progress=lambda done, total: seen.append((done, total)))
    )
    total = None if kind == "unseekable" else len(data)
    assert len(seen) > 1  # chunk by chunk, bytes included
    assert seen[-1] == (len(data), total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert multipart_parts(twin.last)[1][3] == data


async def test_download_progress_counts_up_to_the_announced_length(twin: Recorder, tmp_path: Path) -> None:
    from tests.unit.conftest import ChunkStream

    body = [b"x" * 1000] * 5
    seen: list[tuple[int, int | None]] = []
    twin.reply(stream=ChunkStream(body), headers={"Content-Length": "5000"})
    result = await run(
        client(twin).download_file(
            "/f", tmp_path / "out", progress=lambda done, total: seen.append((done, total))
        )
    )
    assert result == DownloadResult(5000)
    assert seen[0] == (0, 5000) and seen[-1] == (5000, 5000) and len(seen) >= 2
    seen = []  # a new list, not clear(): mypy would keep `seen[0]` narrowed to the first answer
    twin.reply(stream=ChunkStream(body))  # no length announced
    await run(client(twin).download_file("/f", io.BytesIO(), progress=lambda d, t: seen.append((d, t))))
    assert seen[0] == (0, None) and seen[-1] == (5000, None)


async def test_upload_of_a_missing_local_file_sends_nothing_and_leaks_nothing(
    twin: Recorder, tmp_path: Path
) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"x")
    before = _open_fds()
    with pytest.raises(FileNotFoundError):
        await run(
            client(twin).upload_files([FileUpload("/a", present), FileUpload("/b", tmp_path / "missing")])
        )
    assert twin.requests == []
    assert _open_fds() == before


# --- downloads ----------------------------------------------------------------------------------------------


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def devnull() -> IO[bytes]:
    return open(os.devnull, "wb")


@pytest.mark.parametrize(
    ("byte_range", "header"), [((0, 99), "bytes=0-99"), ((100, None), "bytes=100-"), (-50, "bytes=-50")]
)
async def test_download_range_header(twin: Recorder, byte_range: Any, header: str) -> None:
    twin.reply(206, content=b"part", headers={"Content-Range": "bytes 0-3/9"})
    result = await run(client(twin).download_file("/f", io.BytesIO(), range=byte_range))
    assert twin.last.headers["Range"] == header
    assert result == DownloadResult(4, partial=True, content_range="bytes 0-3/9")


async def test_download_to_a_path_replaces_it_only_on_success(twin: Recorder, tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    twin.reply(404, json={"code": "FILE_NOT_FOUND", "message": "no"})
    with pytest.raises(NotFoundError):
        await run(client(twin).download_file("/missing", dest))
    assert dest.read_bytes() == b"old"
    twin.reply(content=b"new content")
    assert await run(client(twin).download_file("/f", str(dest))) == DownloadResult(11)
    assert dest.read_bytes() == b"new content"
    twin.reply(content=b"")
    await run(client(twin).download_file("/empty", dest))
    assert dest.read_bytes() == b""
    assert names_in(tmp_path) == ["out.bin"]  # no temporary files left


async def test_broken_download_leaves_the_destination_alone(twin: Recorder, tmp_path: Path) -> None:
    from tests.unit.conftest import ChunkStream

    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    twin.reply(stream=ChunkStream([b"a" * 10, b"b" * 10, b"c"], fail_after=2))
    with pytest.raises(Exception, match="connection reset"):
        await run(client(twin).download_file("/f", dest))
    assert dest.read_bytes() == b"old"
    assert names_in(tmp_path) == ["out.bin"]


async def test_download_to_a_missing_directory_fails_before_sending(twin: Recorder, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run(client(twin).download_file("/f", tmp_path / "nope" / "out"))
    with pytest.raises(IsADirectoryError):
        await run(client(twin).download_file("/f", tmp_path))
    assert twin.requests == []


class _Repeated(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """`count` chunks of `chunk`, produced lazily (the whole body never exists at once)."""

    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk, self.count = chunk, count

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.count):
            yield self.chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            yield self.chunk


async def test_large_download_is_streamed_not_buffered(twin: Recorder) -> None:
    total = 200 * 1024 * 1024
    chunk = b"z" * (256 * 1024)
    twin.reply(stream=_Repeated(chunk, total // len(chunk)))
    execd = client(twin)
    with devnull() as sink:
        tracemalloc.start()
        try:
            result = await run(execd.download_file("/big", sink))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.bytes_written == total
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
