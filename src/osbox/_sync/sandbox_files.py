# Generated from src/osbox/_async/sandbox_files.py by scripts/unasync.py: do not edit.
"""`SandboxFiles`: `sandbox.files`, the file operations users reach for first, on text and bytes.

    with Sandbox.create() as sandbox:
        sandbox.files.write("/workspace/app.py", "print('hi')\\n")
        assert sandbox.files.read("/workspace/app.py") == "print('hi')\\n"
        [entry.path for entry in sandbox.files.list("/workspace")]   # ['/workspace/app.py']

`watch(path)` streams the changes under a directory (an osbox extension). They sit on execd's file
routes; everything else (streamed transfers, permissions, search, moves) is on `sandbox.execd`. A
path that does not exist raises `NotFoundError` naming it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable

from .._exceptions import NotFoundError
from .._sandbox import _missing
from ..models.execd import FileInfo
from .execd import ExecdClient
from .file_watch import FileWatch

__all__ = ["SandboxFiles"]


class SandboxFiles:
    """Read, write, list and test files in one sandbox (`sandbox.files`)."""

    def __init__(self, execd: Callable[[], ExecdClient]) -> None:
        # A function, not the client: the sandbox opens a new execd client when it resumes.
        self._execd = execd

    def read(self, path: str, *, encoding: str = "utf-8") -> str:
        """The whole file as text (`encoding`, UTF-8 by default; bytes that are not raise
        `UnicodeDecodeError`: use `read_bytes`). For big files, `sandbox.execd.download_file` streams.

            config = sandbox.files.read("/etc/os-release")
        """
        return (self.read_bytes(path)).decode(encoding)

    def read_bytes(self, path: str) -> bytes:
        """The whole file as bytes.

        png = sandbox.files.read_bytes("/workspace/plot.png")
        """
        try:
            return self._execd().read_file(path)
        except NotFoundError as exc:
            raise _missing(path, exc) from exc

    def write(self, path: str, data: str | bytes, *, mode: int | None = None) -> None:
        """Write a whole file (text as UTF-8), replacing it; parent directories are created. `mode` is a
        Python int (`0o755`). To stream a local file, use `sandbox.execd.upload_file(path, Path(...))`.

            sandbox.files.write("/workspace/run.sh", "#!/bin/sh\\necho hi\\n", mode=0o755)
        """
        if not isinstance(data, str | bytes):
            raise TypeError(f"write takes str or bytes, not {type(data).__name__}")
        self._execd().upload_file(path, data, mode=mode)

    def list(self, path: str, *, depth: int = 1) -> builtins.list[FileInfo]:
        """The entries under a directory (`depth` levels, direct children by default), parents first.

        for entry in sandbox.files.list("/workspace"): print(entry.path, entry.size)
        """
        try:
            return self._execd().list_directory(path, depth=depth)
        except NotFoundError as exc:
            raise _missing(path, exc) from exc

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists at `path`.

        if not sandbox.files.exists("/workspace/.venv"): sandbox.run("python3 -m venv /workspace/.venv")
        """
        try:
            self._execd().get_file_info(path)
        except NotFoundError:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def watch(self, path: str, *, recursive: bool = True) -> FileWatch:
        """Watch directory `path` for changes (inotify inside the sandbox); returns once the watch is in
        place. `recursive` (the default) covers every directory below it, also those made later.
        Events: `create`, `modify`, `delete`, `move` (`old_path`: where it was), `overflow`.

            with sandbox.files.watch("/workspace") as changes:
                for event in changes:
                    print(event.type, event.path)

        A missing path raises `NotFoundError`; a server other than `osbox serve`, which has no watch
        route, `FeatureNotSupportedError`.
        """
        return FileWatch(self._execd(), path, recursive=recursive)._start()
