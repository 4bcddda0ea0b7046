"""The streaming upload / download plumbing of execd's filesystem operations (`osbox._async.files`).

Transfers never hold a whole file in memory: an upload from a local path streams the open file into the
multipart body, and a download streams the response into the destination in chunks. A download to a path
writes a temporary file next to it and renames it into place only once the whole body has arrived, so a
failed download (404, broken connection) leaves an existing file untouched.

File modes are Python ints (``0o644``); on the wire execd writes them as octal digits (``644``).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import httpx2

from ._operation import APIRequest, adapter, given, no_content
from .models.execd import (
    FileMetadata,
    Permission,
    mode_to_wire,
)

__all__ = ["DownloadResult", "FileUpload", "Progress", "UploadData", "download_request"]

#: What can be uploaded: bytes, text (encoded as UTF-8), a local path (`os.PathLike`, streamed from disk)
#: or a binary file object (streamed from its start: a seekable one is rewound first, also when the request
#: is retried; the caller keeps ownership and closes it).
UploadData = bytes | str | os.PathLike[str] | IO[bytes]

#: Told how a transfer goes: `progress(done, total)` after each chunk, with the bytes moved so far and
#: the size when known (None otherwise). A plain function, on the async clients too; it runs in the
#: transfer's path, so keep it quick.
Progress = Callable[[int, int | None], object]

#: A download range: `(start, end)` (both inclusive, as in HTTP), `(start, None)` (to the end) or a
#: negative int `-n` (the last n bytes).
ByteRange = tuple[int, int | None] | int

_OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class FileUpload:
    """One file of `upload_files`: where it goes in the sandbox, its content, and optional ownership.

    `mode` is a Python int such as `0o644`; `progress` follows this file's upload (see `Progress`).
    """

    path: str
    data: UploadData
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What `download_file` wrote: the byte count, and whether the server answered a range (206)."""

    bytes_written: int
    partial: bool = False
    #: The server's `Content-Range` (e.g. `bytes 0-99/1000`) for a partial answer.
    content_range: str | None = None


def _path_params(paths: str | Iterable[str]) -> list[tuple[str, str]]:
    """Repeated `path=` query parameters; at least one path is required."""
    items = [paths] if isinstance(paths, str) else list(paths)
    if not items:
        raise ValueError("at least one path is required")
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"paths must be non-empty strings, got {item!r}")
    return [("path", item) for item in items]


def _ownership(mode: int | None, owner: str | None, group: str | None) -> dict[str, Any]:
    """The given ones of mode (in wire form), owner and group: the fields to set, others left unset."""
    return given(mode=None if mode is None else mode_to_wire(mode), owner=owner, group=group)


def _permission(mode: int | None, owner: str | None, group: str | None) -> Permission:
    """A `Permission` with only the given fields set (unset ones stay off the wire)."""
    return Permission(**_ownership(mode, owner, group))


def _range_header(byte_range: ByteRange) -> str:
    """The `Range` header value for a `ByteRange` (see its description)."""
    if isinstance(byte_range, int):
        if byte_range >= 0:
            raise ValueError(f"an int range must be negative (-n: the last n bytes), got {byte_range}")
        return f"bytes={byte_range}"
    start, end = byte_range
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range {byte_range!r}: need 0 <= start <= end")
    return f"bytes={start}-{'' if end is None else end}"


def _body_length(response: httpx2.Response) -> int | None:
    """How many bytes the body will bring, when the answer says so (and is not compressed)."""
    if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


class _Sink:
    """Counts what a download writes and reports progress; subclasses say where the bytes go."""

    def __init__(self, progress: Progress | None) -> None:
        self.written = 0
        self._total: int | None = None
        self._progress = progress

    def begin(self, response: httpx2.Response) -> None:
        """The answer has come (headers only): the size is known now, if it ever is."""
        if self._progress is not None:
            self._total = _body_length(response)
            self._progress(0, self._total)

    def _count(self, size: int) -> None:
        self.written += size
        if self._progress is not None:
            self._progress(self.written, self._total)


class _CountingWriter(_Sink):
    """Writes to the caller's binary file object, counting bytes; never closes it (the caller owns it)."""

    def __init__(self, target: IO[bytes], progress: Progress | None) -> None:
        super().__init__(progress)
        self._target = target

    def write(self, data: bytes) -> int:
        self._target.write(data)
        self._count(len(data))
        return len(data)

    def commit(self) -> None:
        """Nothing to do: the caller's file object already holds the data."""


class _AtomicFileWriter(_Sink):
    """Writes a temporary file next to `dest`; `commit()` renames it over `dest`, `close()` cleans up.

    The temporary file is created on the first write (or at commit, for an empty body), so an error
    answer creates nothing. It is created with mode 0o666 minus the umask, like `open(dest, "wb")`.
    """

    def __init__(self, dest: Path, progress: Progress | None) -> None:
        super().__init__(progress)
        self._dest = dest
        self._tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        self._file: IO[bytes] | None = None
        self._committed = False

    def _opened(self) -> IO[bytes]:
        if self._file is None:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def write(self, data: bytes) -> int:
        self._opened().write(data)
        self._count(len(data))
        return len(data)

    def commit(self) -> None:
        """Move the complete download into place."""
        self._opened().close()
        os.replace(self._tmp, self._dest)
        self._committed = True

    def close(self) -> None:
        """Close the temporary file and, unless committed, remove it."""
        if self._file is not None:
            self._file.close()
            if not self._committed:
                self._tmp.unlink(missing_ok=True)


_Writer = _CountingWriter | _AtomicFileWriter


class _ProgressReader:
    """A binary file object that reports how much of it the request body has read (`Progress`).

    The multipart encoder rewinds the file and measures it through `seek`/`tell`/`fileno`, which
    pass through; only `read` counts.
    """

    def __init__(self, file: IO[bytes], progress: Progress) -> None:
        self._file = file
        self._progress = progress
        self._done = 0
        self._total = _file_size(file)

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if data:
            self._done += len(data)
            self._progress(self._done, self._total)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not hasattr(self._file, "seek"):
            raise io.UnsupportedOperation("seek")
        self._done = self._file.seek(offset, whence)
        return self._done

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def _file_size(file: IO[bytes]) -> int | None:
    """The whole size of a file object (uploads start at its beginning), None if it cannot be told."""
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    try:
        here = file.tell()
        size = file.seek(0, os.SEEK_END)
        file.seek(here)
        return size
    except (AttributeError, OSError):
        return None


def _download_result(writer: _Writer, response: httpx2.Response) -> DownloadResult:
    writer.commit()
    partial = response.status_code == 206
    return DownloadResult(
        bytes_written=writer.written,
        partial=partial,
        content_range=response.headers.get("content-range") if partial else None,
    )


def _body(response: httpx2.Response) -> bytes:
    return response.content


def _replaced_counts(verbose: bool, response: httpx2.Response) -> dict[str, int] | None:
    if not verbose:
        return None
    parsed: dict[str, Any] = adapter(dict[str, dict[str, Any]])(response)
    return {path: int(result.get("replacedCount", 0)) for path, result in parsed.items()}


def download_request(
    path: str, dest: str | os.PathLike[str] | IO[bytes], range: ByteRange | None, progress: Progress | None
) -> APIRequest[DownloadResult]:
    """`GET /files/download` streaming into `dest` (see `download_file`)."""
    headers = {"Accept": _OCTET_STREAM}
    if range is not None:
        headers["Range"] = _range_header(range)
    writer: _Writer
    closers: list[IO[bytes]] = []
    if isinstance(dest, str | os.PathLike):
        target = Path(dest)
        if target.is_dir():
            raise IsADirectoryError(f"download destination {str(target)!r} is a directory")
        if not target.parent.is_dir():
            raise FileNotFoundError(f"download destination directory {str(target.parent)!r} missing")
        writer = _AtomicFileWriter(target, progress)
        closers.append(cast(IO[bytes], writer))  # the sender only calls close() on it
    else:
        writer = _CountingWriter(dest, progress)
    return APIRequest(
        "GET",
        "/files/download",
        params={"path": path},
        headers=headers,
        download_to=writer,
        closers=closers,
        parse=lambda response: _download_result(writer, response),
    )


def _upload_request(files: list[FileUpload]) -> APIRequest[None]:
    """One multipart request: per file a `metadata` part (JSON) then a `file` part, paths streamed."""
    if not files:
        raise ValueError("at least one file is required")
    parts: list[tuple[str, tuple[str, Any, str]]] = []
    opened: list[IO[bytes]] = []
    try:
        for upload in files:
            if not upload.path:
                raise ValueError("every upload needs a target path")
            meta = FileMetadata(path=upload.path, **_ownership(upload.mode, upload.owner, upload.group))
            content = _upload_content(upload.data, opened)
            if upload.progress is not None:
                readable = io.BytesIO(content) if isinstance(content, bytes) else content
                content = _ProgressReader(readable, upload.progress)  # read in chunks, even bytes
            filename = posixpath.basename(upload.path.rstrip("/")) or "file"
            parts.append(("metadata", ("metadata", json.dumps(meta.to_wire()).encode(), "application/json")))
            parts.append(("file", (filename, content, _OCTET_STREAM)))
    except BaseException:
        for file in opened:
            file.close()
        raise
    return APIRequest("POST", "/files/upload", files=parts, closers=opened, parse=no_content)


def _upload_content(data: UploadData, opened: list[IO[bytes]]) -> Any:
    """The multipart content of one upload: bytes as they are, a path opened (and remembered to close)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, os.PathLike):
        file = open(os.fspath(data), "rb")  # noqa: SIM115 - closed by the sender once the request is done
        opened.append(file)
        return file
    if hasattr(data, "read"):
        return data
    raise TypeError(f"cannot upload {type(data).__name__}: pass bytes, str, a path or a binary file object")
