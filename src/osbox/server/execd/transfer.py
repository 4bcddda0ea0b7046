"""`POST /files/upload` (streamed multipart) and `GET /files/download` (streamed, with Range).

Bytes never travel through `handle.call`: the agent opens the file inside the sandbox's view
(`handle.open_file`, as the sandbox user) and hands the server a descriptor; the server moves
bytes through it in pieces of a few MiB (reading or writing one in a thread while the event loop
handles the next), so memory stays flat whatever the size.

Upload: the multipart body is parsed as it arrives (python-multipart's streaming parser).
`metadata` parts (JSON `{path, owner?, group?, mode?}`) are paired by order with `file` parts;
a `file` part must come after its metadata. Each file is written to a temp file beside its
target and renamed over it only when complete, so a failed upload leaves the old file intact.

Download: `Range: bytes=a-b | a- | -n` (one range) → 206 with `Content-Range`; a malformed,
multiple or unsatisfiable range → 416 with `Content-Range: bytes */size`. Only regular files are
sent: the file is opened non-blocking (a FIFO the sandbox planted would otherwise block the open
for ever) and anything else is a 400. A read that takes longer than `READ_TIMEOUT_S` (a stuck
network file system under a host volume) ends the response.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import os
import posixpath
import stat
from typing import Any
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from osbox.server._backend.base import SandboxHandle

from .._body import BadBody, parse_json
from .errors import (
    INVALID_FILE,
    INVALID_FILE_METADATA,
    ExecdError,
    bad_request,
    from_sandbox_error,
    in_sandbox,
    log,
)
from .inputs import query_one, sandbox_of

__all__ = ["download", "parse_range", "upload"]

CHUNK = 1 << 20
#: Downloads are read and sent in pieces this large (2 MiB measured no faster, the client slower).
DOWNLOAD_CHUNK = 1 << 20
#: Upload bytes are written in batches this large, one batch writing while the next is parsed.
WRITE_BATCH = 4 << 20
MAX_METADATA_BYTES = 64 * 1024
#: Longest one read of a download may take before the response is abandoned (the reading thread
#: cannot be interrupted; it closes the fd whenever it ends).
READ_TIMEOUT_S = 60.0


# --- download --------------------------------------------------------------------------------


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte range `(first, last)` a `Range` header asks for; None if unsatisfiable.

    Raises ValueError when the header is malformed or asks for several ranges.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec or "," in spec:
        raise ValueError("only a single 'bytes=' range is supported")
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        raise ValueError(f"malformed range {header!r}")
    if first_s == "":
        if last_s == "" or int(last_s) == 0:
            raise ValueError(f"malformed range {header!r}")
        length = min(int(last_s), size)
        return (size - length, size - 1) if length else None
    first = int(first_s)
    last = size - 1 if last_s == "" else min(int(last_s), size - 1)
    if last_s != "" and int(last_s) < first:
        raise ValueError(f"malformed range {header!r}")
    if first >= size:
        return None
    return first, last


def content_disposition(path: str) -> str:
    """`attachment; filename="…"` plus `filename*` (RFC 5987) when the name is not plain ASCII."""
    name = posixpath.basename(path) or "download"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


class FdResponse(Response):
    """Streams `length` bytes of an open fd from `offset`, and always closes the fd."""

    def __init__(self, fd: int, offset: int, length: int, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type="application/octet-stream")
        self.fd, self.offset, self.length = fd, offset, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reading: asyncio.Future[bytes] | None = None
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            position, remaining = self.offset, self.length
            # The next piece is read (in a thread: the disk may be slow) while this one is sent.
            while remaining > 0:
                if reading is None:
                    reading = self._read(position, remaining)
                try:
                    data = await asyncio.wait_for(asyncio.shield(reading), READ_TIMEOUT_S)
                except TimeoutError:
                    log.warning("a download read took over %g s: response abandoned", READ_TIMEOUT_S)
                    break  # the client sees a body shorter than its Content-Length
                reading = None
                if not data:
                    break  # the file shrank while we sent it; the client sees a short body
                position += len(data)
                remaining -= len(data)
                if remaining > 0:
                    reading = self._read(position, remaining)
                await send({"type": "http.response.body", "body": data, "more_body": remaining > 0})
            if remaining > 0 or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if reading is None or reading.done():
                os.close(self.fd)
            else:  # never close the fd under a reading thread: its end closes it
                reading.add_done_callback(functools.partial(_close_after, self.fd))

    def _read(self, position: int, remaining: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(
            asyncio.to_thread(os.pread, self.fd, min(DOWNLOAD_CHUNK, remaining), position)
        )


def _close_after(fd: int, reading: asyncio.Future[bytes]) -> None:
    if not reading.cancelled():
        reading.exception()  # retrieved: the response has already ended
    os.close(fd)


async def _open(handle: SandboxHandle, path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return await handle.files.open(path, flags, mode)
    except (OSError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise bad_request(f"not a regular file (a socket or a device): {path}", INVALID_FILE) from None
        raise from_sandbox_error(exc) from None


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device"}
    kinds |= {stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


async def download(request: Request) -> Response:
    """`GET /files/download?path=` with an optional `Range` header."""
    handle = sandbox_of(request)
    path = await in_sandbox(handle.files.expand(query_one(request, "path")), "expand")
    fd = await _open(handle, path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, and is refused
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise bad_request(f"not a regular file ({_kind(st.st_mode)}): {path}", INVALID_FILE)
        size = st.st_size
        headers = {"Content-Disposition": content_disposition(path), "Accept-Ranges": "bytes"}
        offset, length, status = 0, size, 200
        range_header = request.headers.get("range")
        if range_header:
            try:
                wanted = parse_range(range_header, size)
            except ValueError as exc:
                wanted, problem = None, str(exc)
            else:
                problem = f"range {range_header!r} is outside the file ({size} bytes)"
            if wanted is None:
                raise ExecdError(416, INVALID_FILE, problem, {"Content-Range": f"bytes */{size}"})
            offset, length, status = wanted[0], wanted[1] - wanted[0] + 1, 206
            headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        headers["Content-Length"] = str(length)
    except BaseException:
        os.close(fd)
        raise
    return FdResponse(fd, offset, length, status, headers)


# --- upload ----------------------------------------------------------------------------------


def _write_all(fd: int, pieces: list[memoryview]) -> None:
    """Write every piece, in order, with as few system calls as the kernel allows."""
    while pieces:
        written = os.writev(fd, pieces[:1024])
        while written and pieces:
            if written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            else:
                pieces[0] = pieces[0][written:]
                written = 0


class _Upload:
    """Drives one multipart upload: pairs metadata with files and writes each to the sandbox."""

    def __init__(self, handle: SandboxHandle) -> None:
        self.handle = handle
        self.metadata: collections.deque[dict[str, Any]] = collections.deque()
        self.uploaded = 0
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._kind = ""
        self._meta = bytearray()
        self._target: dict[str, Any] | None = None
        self._fd: int | None = None
        # Slices of the received chunks, not copies: written out with writev once 1 MiB is queued.
        self._pending: list[memoryview] = []
        self._pending_size = 0
        self._writing: asyncio.Future[None] | None = None

    # Parser callbacks only record what happened; the async work runs after each parser.write.
    def callbacks(self, events: list[tuple[str, Any]]) -> Any:
        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._header_field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            key = self._header_field.lower()
            self._headers[key] = self._headers.get(key, b"") + data[start:end]

        def on_header_end() -> None:
            self._header_field = b""

        return {
            "on_part_begin": lambda: self._headers.clear(),
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": lambda: events.append(("begin", dict(self._headers))),
            "on_part_data": lambda data, start, end: events.append(("data", memoryview(data)[start:end])),
            "on_part_end": lambda: events.append(("end", None)),
        }

    async def handle_event(self, kind: str, value: Any) -> None:
        if kind == "begin":
            _, options = parse_options_header(value.get(b"content-disposition", b""))
            self._kind = options.get(b"name", b"").decode("utf-8", "replace")
            if self._kind == "file":
                await self._open_target()
        elif kind == "data":
            if self._kind == "metadata":
                self._meta += value
                if len(self._meta) > MAX_METADATA_BYTES:
                    raise bad_request("metadata part too large", INVALID_FILE_METADATA)
            elif self._kind == "file":
                self._pending.append(value)
                self._pending_size += len(value)
                if self._pending_size >= WRITE_BATCH:
                    await self._flush()
        elif kind == "end":
            if self._kind == "metadata":
                self.metadata.append(_parse_metadata(bytes(self._meta)))
                self._meta.clear()
            elif self._kind == "file":
                await self._finish_target()
            self._kind = ""

    async def _open_target(self) -> None:
        if not self.metadata:
            raise bad_request("a 'file' part must follow its 'metadata' part", INVALID_FILE_METADATA)
        meta = self.metadata.popleft()
        plan = await in_sandbox(self.handle.files.prepare_upload(meta["path"]), "prepare_upload")
        self._target = {**meta, **plan}
        self._fd = await _open(self.handle, plan["temp"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    async def _flush(self) -> None:
        """Hand the queued slices to a writer thread; parsing goes on while it writes.

        One write is in flight at a time (the previous one is awaited first), so bytes land in
        order and at most two batches are held in memory.
        """
        if self._pending and self._fd is not None:
            pieces, self._pending, self._pending_size = self._pending, [], 0
            await self._written()
            self._writing = asyncio.ensure_future(asyncio.to_thread(_write_all, self._fd, pieces))

    async def _written(self) -> None:
        """Wait for the write in flight, if any (its error, e.g. ENOSPC, is raised here)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _finish_target(self) -> None:
        await self._flush()
        await self._written()
        assert self._fd is not None and self._target is not None
        os.close(self._fd)
        self._fd = None
        target, self._target = self._target, None
        try:
            finishing = self.handle.files.finish_upload(
                target["temp"],
                target["path"],
                mode=target.get("mode"),
                owner=target.get("owner"),
                group=target.get("group"),
            )
            await in_sandbox(finishing, "finish_upload")
        except BaseException:
            await self._discard(target["temp"])
            raise
        self.uploaded += 1

    async def abort(self) -> None:
        """Close and remove a half-written file after a failure."""
        if self._writing is not None:  # never close the fd under a writing thread
            writing, self._writing = self._writing, None
            with contextlib.suppress(BaseException):
                await asyncio.shield(writing)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._target is not None:
            await self._discard(self._target["temp"])
            self._target = None

    async def _discard(self, temp: str) -> None:
        try:
            await self.handle.files.delete_files([temp])
        except Exception as exc:  # best effort: the failure being reported matters more
            log.warning("could not remove upload temp file %s: %s", temp, exc)


def _parse_metadata(raw: bytes) -> dict[str, Any]:
    try:
        meta = parse_json(raw, "the metadata part")
    except BadBody as exc:
        raise bad_request(str(exc), INVALID_FILE_METADATA) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("path"), str) or not meta["path"]:
        raise bad_request("metadata must be a JSON object with a 'path'", INVALID_FILE_METADATA)
    for key in ("owner", "group"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad_request(f"metadata '{key}' must be a string", INVALID_FILE_METADATA)
    return meta


async def upload(request: Request) -> Response:
    """`POST /files/upload`: multipart `metadata`/`file` pairs, streamed to their targets."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise bad_request("expected a multipart/form-data body with a boundary")
    job = _Upload(sandbox_of(request))
    events: list[tuple[str, Any]] = []
    parser = MultipartParser(boundary, job.callbacks(events))
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except Exception as exc:
                raise bad_request(f"malformed multipart body: {exc}") from None
            for kind, value in events:
                await job.handle_event(kind, value)
            events.clear()
        parser.finalize()
        if job._fd is not None:
            raise bad_request("multipart body ended inside a file part", INVALID_FILE)
    except BaseException:
        await job.abort()
        raise
    if job.uploaded == 0:
        raise bad_request("no 'file' part in the upload", INVALID_FILE)
    if job.metadata:
        raise bad_request(f"{len(job.metadata)} metadata part(s) had no file part", INVALID_FILE)
    return Response(status_code=200)
