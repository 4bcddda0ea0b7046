"""`GET /files/watch?path=&recursive=`: changes under a directory, streamed (an osbox extension).

No OpenSandbox API watches files; E2B's users rely on it. The backend watches inside the sandbox
(inotify, as the sandbox user, in its own view of paths) and this route streams what it sees in
execd's framing (wire-behaviour §4.1, `{...}` and a blank line):

    {"type":"init","text":"/workspace","timestamp":...}          the watch is in place
    {"type":"create","path":"/workspace/a.txt","is_dir":false,"timestamp":...}
    {"type":"move","path":"/workspace/b.txt","old_path":"/workspace/a.txt","is_dir":false,...}
    {"type":"ping","text":"pong",...}                            every 3 s while nothing changes

Types: `create`, `modify`, `delete`, `move`, `overflow` (events were lost). `recursive` (default
true) watches every subdirectory too, also those made later. The stream ends when the client
leaves (which ends the watch inside the sandbox) or when the watched directory itself is deleted
(a last `delete` event for it). A missing path is 404 `FILE_NOT_FOUND`, a file 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from osbox.server._backend.base import WatchEvent

from .errors import NOT_SUPPORTED, ExecdError, bad_request, in_sandbox
from .inputs import query_one, sandbox_of
from .streaming import KEEPALIVE_SECONDS, STREAM_HEADERS, frame

__all__ = ["watch_files"]

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


async def watch_files(request: Request) -> Response:
    """`GET /files/watch?path=&recursive=true`: the directory's changes as a stream of events."""
    path = query_one(request, "path")
    recursive = _BOOLEANS.get(request.query_params.get("recursive", "true").lower())
    if recursive is None:
        raise bad_request("'recursive' must be true or false")
    files = sandbox_of(request).files
    expanded = await in_sandbox(files.expand(path), "expand")
    try:
        events = await in_sandbox(files.watch(expanded, recursive=recursive), "watch")
    except NotImplementedError as exc:
        raise ExecdError(501, NOT_SUPPORTED, str(exc)) from None
    return StreamingResponse(
        _stream(expanded, events), media_type="text/event-stream", headers=STREAM_HEADERS
    )


async def _stream(path: str, events: AsyncIterator[WatchEvent]) -> AsyncIterator[bytes]:
    yield frame("init", text=path)
    pending: asyncio.Future[WatchEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield frame("ping", text="pong")  # also how a client that left is noticed
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            fields = {name: value for name, value in event.items() if name != "type"}
            yield frame(event["type"], **fields)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()  # type: ignore[attr-defined]
