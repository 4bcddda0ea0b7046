# Generated from src/osbox/_async/file_watch.py by scripts/unasync.py: do not edit.
"""`FileWatch`: the changes under a directory in a sandbox, from `sandbox.files.watch(...)`.

    with sandbox.files.watch("/workspace") as changes:
        for event in changes:            # FileWatchEvent: type, path, is_dir, old_path
            print(event.type, event.path)      # create / modify / delete / move / overflow

Over execd's `GET /files/watch` (an osbox extension: inotify inside the sandbox). `watch()` returns
once the watch is in place, so a change made after it is seen; closing the watch (leaving the
`with`, `close()`, or breaking out of the loop and closing) ends it inside the sandbox.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Self

from .._exceptions import APIStatusError, FeatureNotSupportedError, NotFoundError, SandboxError
from .._execd import _watch_unsupported
from .._sandbox import _missing
from ..models.execd import FileWatchEvent
from .execd import ExecdClient

__all__ = ["FileWatch"]


class FileWatch:
    """Changes under `path` (and below it, if recursive), as `FileWatchEvent`s, until closed."""

    def __init__(self, execd: ExecdClient, path: str, *, recursive: bool) -> None:
        self.path = path
        self._stream = execd.watch_files(path, recursive=recursive)
        self._events = self._stream.__iter__()
        self._first: FileWatchEvent | None = None

    def _start(self) -> Self:
        """Wait until the server says the watch is in place (its `init` event)."""
        try:
            first = next(self._events)
        except StopAsyncIteration:
            self.close()
            raise SandboxError(f"the server ended the watch of {self.path} before it started") from None
        except NotFoundError as exc:
            self.close()
            if _watch_unsupported(exc):
                raise _unsupported(exc) from exc
            raise _missing(self.path, exc) from exc
        except APIStatusError as exc:
            self.close()
            if _watch_unsupported(exc):
                raise _unsupported(exc) from exc
            raise
        if first.is_change:  # a server that sends no `init`: keep what it sent
            self._first = first
        return self

    def __iter__(self) -> Generator[FileWatchEvent, None, None]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        for event in self._events:
            if event.is_change:
                yield event

    def close(self) -> None:
        """End the watch (inside the sandbox too)."""
        self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _unsupported(exc: APIStatusError) -> FeatureNotSupportedError:
    return FeatureNotSupportedError(
        "this server cannot watch files: files.watch needs GET /files/watch, an extension of "
        f"'osbox serve' that other OpenSandbox servers lack (it answered {exc.status_code} {exc.code})"
    )
