# Generated from src/osbox/_async/files.py by scripts/unasync.py: do not edit.
"""`FileOperations`: execd's filesystem operations, the base of `ExecdClient`.

Transfers stream (an upload from a path, a download into a file); how is in `osbox._files`, shared by
both twins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import IO, Any

from .._files import (
    _OCTET_STREAM,
    ByteRange,
    DownloadResult,
    FileUpload,
    Progress,
    UploadData,
    _body,
    _path_params,
    _permission,
    _replaced_counts,
    _upload_request,
    download_request,
)
from .._operation import APIRequest, adapter, no_content
from ..models.execd import (
    FileInfo,
    Permission,
    PermissionMap,
    RenameFileItem,
    RenameFilesRequest,
    ReplaceFileContentItem,
    ReplaceFileContentRequest,
)
from .client import SyncAPIClient

__all__ = ["FileOperations"]


class FileOperations(SyncAPIClient):
    """The filesystem half of execd's API: `ExecdClient` is one (see `osbox._files` for the plumbing)."""

    def get_file_info(self, paths: str | Iterable[str]) -> dict[str, FileInfo]:
        """Metadata of one or more files, by path (`GET /files/info`). A missing path is a 404.

        info = execd.get_file_info("/etc/hostname")["/etc/hostname"]
        info.size, oct(mode_from_wire(info.mode))
        """
        return self._call(
            APIRequest("GET", "/files/info", params=_path_params(paths), parse=adapter(dict[str, FileInfo]))
        )

    def delete_files(self, paths: str | Iterable[str]) -> None:
        """Delete files (`DELETE /files`); missing ones are ignored, directories refused.

        execd.delete_files(["/tmp/a.txt", "/tmp/b.txt"])
        """
        return self._call(APIRequest("DELETE", "/files", params=_path_params(paths), parse=no_content))

    def set_permissions(self, permissions: Mapping[str, Permission | int]) -> None:
        """Change modes and owners (`POST /files/permissions`).

        Each value is a Python mode int (`0o644`) or a `Permission`, whose `mode` is already in the wire's
        octal-digit form (`644`):

            execd.set_permissions({"/app/run.sh": 0o755, "/app/data": Permission(owner="app", mode=750)})
        """
        if not permissions:
            raise ValueError("at least one path is required")
        body = {
            path: value if isinstance(value, Permission) else _permission(value, None, None)
            for path, value in permissions.items()
        }
        return self._call(
            APIRequest("POST", "/files/permissions", json=PermissionMap(body).to_wire(), parse=no_content)
        )

    def move_files(self, moves: Iterable[tuple[str, str] | RenameFileItem]) -> None:
        """Move or rename files (`POST /files/mv`); destination parents are created.

        execd.move_files([("/tmp/a.txt", "/work/a.txt")])
        """
        items = [m if isinstance(m, RenameFileItem) else RenameFileItem(src=m[0], dest=m[1]) for m in moves]
        if not items:
            raise ValueError("at least one move is required")
        return self._call(
            APIRequest("POST", "/files/mv", json=RenameFilesRequest(items).to_wire(), parse=no_content)
        )

    def search_files(self, path: str, pattern: str = "**") -> list[FileInfo]:
        """Files under `path` whose base name matches the glob `pattern` (`GET /files/search`).

        py_files = execd.search_files("/app", "*.py")
        """
        return self._call(
            APIRequest(
                "GET",
                "/files/search",
                params={"path": path, "pattern": pattern},
                parse=adapter(list[FileInfo]),
            )
        )

    def replace_in_files(
        self, replacements: Mapping[str, tuple[str, str]], verbose: bool = False
    ) -> dict[str, int] | None:
        """Replace every `old` by `new` in each file (`POST /files/replace`). `old` must not be empty.

        With `verbose=True` returns `{path: replaced count}`, else None:

            execd.replace_in_files({"/app/conf.ini": ("debug=0", "debug=1")}, verbose=True)
        """
        if not replacements:
            raise ValueError("at least one file is required")
        body = ReplaceFileContentRequest(
            {path: ReplaceFileContentItem(old=old, new=new) for path, (old, new) in replacements.items()}
        )
        return self._call(
            APIRequest(
                "POST",
                "/files/replace",
                params={"verbose": "true"} if verbose else None,
                json=body.to_wire(),
                parse=lambda response: _replaced_counts(verbose, response),
            )
        )

    def upload_file(
        self,
        path: str,
        data: UploadData,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Write one file in the sandbox (`POST /files/upload`); parent directories are created.

        `data` is bytes, text (UTF-8), a local path (`pathlib.Path`, streamed from disk) or a binary file
        object (streamed). A plain `str` is content, never a local path. `mode` is a Python int;
        `progress(done, total)` hears how the upload goes:

            execd.upload_file("/app/run.sh", "#!/bin/sh\\necho hi\\n", mode=0o755)
            execd.upload_file("/data/big.bin", Path("big.bin"), progress=lambda done, total: print(done))
        """
        upload = FileUpload(path, data, mode=mode, owner=owner, group=group, progress=progress)
        return self._call(_upload_request([upload]))

    def upload_files(self, files: Iterable[FileUpload]) -> None:
        """Write several files in one multipart request (`POST /files/upload`).

        execd.upload_files([FileUpload("/app/a.py", b"print(1)"), FileUpload("/app/b.bin", Path("b.bin"))])
        """
        return self._call(_upload_request(list(files)))

    def download_file(
        self,
        path: str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        range: ByteRange | None = None,
        progress: Progress | None = None,
    ) -> DownloadResult:
        """Stream a sandbox file into `dest` (`GET /files/download`), chunk by chunk.

        `dest` is a local path (written atomically: a failed download leaves it untouched) or a binary file
        object (written from its current position, left open). `range` asks for part of the file:
        `(start, end)` inclusive, `(start, None)`, or `-n` for the last n bytes; the result says whether
        the server answered with just that part (206). `progress(done, total)` hears how it goes (`total`:
        the answer's length, None when the server does not say).

            execd.download_file("/app/out.tar", "out.tar")
            with open("tail.log", "ab") as f:
                execd.download_file("/var/log/app.log", f, range=(offset, None))
        """
        return self._call(download_request(path, dest, range, progress))

    def read_file(self, path: str) -> bytes:
        """The whole content of a (small) sandbox file; use `download_file` for big ones.

        text = execd.read_file("/etc/os-release").decode()
        """
        return self._call(
            APIRequest(
                "GET",
                "/files/download",
                params={"path": path},
                headers={"Accept": _OCTET_STREAM},
                parse=_body,
            )
        )

    def list_directory(self, path: str, depth: int | None = None) -> list[FileInfo]:
        """Entries under a directory (`GET /directories/list`), parents before children.

        `depth` omitted means the server's default (1: direct children); `depth=0` returns nothing.

            for entry in execd.list_directory("/app", depth=2): print(entry.path)
        """
        params: dict[str, Any] = {"path": path}
        if depth is not None:
            if depth < 0:
                raise ValueError(f"depth must be >= 0, got {depth}")
            params["depth"] = depth
        return self._call(
            APIRequest("GET", "/directories/list", params=params, parse=adapter(list[FileInfo]))
        )

    def create_directory(
        self, path: str, mode: int | None = None, owner: str | None = None, group: str | None = None
    ) -> None:
        """Create a directory and its parents (`POST /directories`), then set the leaf's mode and owner.

        `mode` is a Python int; when omitted none is sent and the server's default applies.

            execd.create_directory("/app/cache", mode=0o700)
        """
        body = PermissionMap({path: _permission(mode, owner, group)})
        return self._call(APIRequest("POST", "/directories", json=body.to_wire(), parse=no_content))

    def delete_directory(self, paths: str | Iterable[str]) -> None:
        """Delete directories recursively (`DELETE /directories`).

        execd.delete_directory("/app/cache")
        """
        return self._call(APIRequest("DELETE", "/directories", params=_path_params(paths), parse=no_content))
