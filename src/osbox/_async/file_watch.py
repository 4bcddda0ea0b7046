"""`AsyncFileWatch`: the changes under a directory in a sandbox, from `sandbox.files.watch(...)`.

    async with await sandbox.files.watch("/workspace") as changes:
        async for event in changes:            # FileWatchEvent: type, path, is_dir, old_path
            print(event.type, event.path)      # create / modify / delete / move / overflow

Over execd's `GET /files/watch` (an osbox extension: inotify inside the sandbox). `watch()` returns
once the watch is in place, so a change made after it is seen; closing the watch (leaving the
`with`, `aclose()`, or breaking out of the loop and closing) ends it inside the sandbox.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Self

from .._exceptions import APIStatusError, FeatureNotSupportedError, NotFoundError, SandboxError
from .._execd import _watch_unsupported
from .._sandbox import _missing
from ..models.execd import FileWatchEvent
from .execd import AsyncExecdClient

__all__ = ["AsyncFileWatch"]


class AsyncFileWatch:
    """Changes under `path` (and below it, if recursive), as `FileWatchEvent`s, until closed."""

    def __init__(self, execd: AsyncExecdClient, path: str, *, recursive: bool) -> None:
        self.path = path
        self._stream = execd.watch_files(path, recursive=recursive)
        self._events = self._stream.__aiter__()
        self._first: FileWatchEvent | None = None

    async def _start(self) -> Self:
        """Wait until the server says the watch is in place (its `init` event)."""
        try:
            first = await anext(self._events)
        except StopAsyncIteration:
            await self.aclose()
            raise SandboxError(f"the server ended the watch of {self.path} before it started") from None
        except NotFoundError as exc:
            await self.aclose()
            if _watch_unsupported(exc):
                raise _unsupported(exc) from exc
            raise _missing(self.path, exc) from exc
        except APIStatusError as exc:
            await self.aclose()
            if _watch_unsupported(exc):
                raise _unsupported(exc) from exc
            raise
        if first.is_change:  # a server that sends no `init`: keep what it sent
            self._first = first
        return self

    async def __aiter__(self) -> AsyncGenerator[FileWatchEvent, None]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for event in self._events:
            if event.is_change:
                yield event

    async def aclose(self) -> None:
        """End the watch (inside the sandbox too)."""
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _unsupported(exc: APIStatusError) -> FeatureNotSupportedError:
    return FeatureNotSupportedError(
        "this server cannot watch files: files.watch needs GET /files/watch, an extension of "
        f"'osbox serve' that other OpenSandbox servers lack (it answered {exc.status_code} {exc.code})"
    )
