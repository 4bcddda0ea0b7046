"""The typed file and session operations of a bwrap sandbox, each one request to its agent.

The work happens inside the sandbox, in the agent, as the sandbox user (`_agent/fs.py` holds each
operation and its rules), so paths resolve in the sandbox's own view. Here the typed methods of
`SandboxFiles` / `SandboxSessions` become the agent's operation names and JSON arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from ..._agent.fs import SESSION_STATE_DIR
from ..base import (
    BackendError,
    FileInfo,
    JSONValue,
    ReplaceCount,
    SandboxFiles,
    SandboxSessions,
    UploadPlan,
    WatchEvent,
)
from .agent_client import AgentConnection

__all__ = ["AgentFiles", "AgentSessions"]

#: Runs one agent operation: `call("stat", paths=[...])`.
AgentCall = Callable[..., Awaitable[Any]]
#: Opens a path in the sandbox's view: `open_file(path, flags, mode)` → host fd.
OpenFile = Callable[[str, int, int], Awaitable[int]]
#: Sends one request whose replies stream on: `open_stream({"op": ...})` → (result, connection).
OpenStream = Callable[[dict[str, Any]], Awaitable[tuple[Any, AgentConnection]]]


class AgentFiles(SandboxFiles):
    """`SandboxFiles` over the agent's file operations."""

    def __init__(self, call: AgentCall, open_file: OpenFile, open_stream: OpenStream) -> None:
        self._call = call
        self._open_file = open_file
        self._open_stream = open_stream

    async def expand(self, path: str, env: Mapping[str, str] | None = None) -> str:
        return cast(str, await self._call("expand", path=path, **_env(env)))

    async def resolve_dir(self, path: str, env: Mapping[str, str] | None = None) -> str:
        return cast(str, await self._call("resolve_dir", path=path, **_env(env)))

    async def stat(self, paths: Sequence[str]) -> dict[str, FileInfo]:
        return cast(dict[str, FileInfo], await self._call("stat", paths=list(paths)))

    async def delete_files(self, paths: Sequence[str]) -> None:
        await self._call("delete_files", paths=list(paths))

    async def set_permissions(self, items: JSONValue) -> None:
        await self._call("set_permissions", items=items)

    async def move(self, items: JSONValue) -> None:
        await self._call("move", items=items)

    async def search(self, path: str, pattern: str) -> list[FileInfo]:
        return cast(list[FileInfo], await self._call("search", path=path, pattern=pattern))

    async def replace(self, items: JSONValue) -> dict[str, ReplaceCount]:
        return cast(dict[str, ReplaceCount], await self._call("replace", items=items))

    async def list_dir(self, path: str, depth: int) -> list[FileInfo]:
        return cast(list[FileInfo], await self._call("list_dir", path=path, depth=depth))

    async def make_dirs(self, items: JSONValue) -> None:
        await self._call("make_dirs", items=items)

    async def delete_dirs(self, paths: Sequence[str]) -> None:
        await self._call("delete_dirs", paths=list(paths))

    async def prepare_upload(self, path: str) -> UploadPlan:
        return cast(UploadPlan, await self._call("prepare_upload", path=path))

    async def finish_upload(
        self, temp: str, path: str, *, mode: object = None, owner: object = None, group: object = None
    ) -> None:
        await self._call("finish_upload", temp=temp, path=path, mode=mode, owner=owner, group=group)

    async def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return await self._open_file(path, flags, mode)

    async def watch(self, path: str, *, recursive: bool) -> AsyncIterator[WatchEvent]:
        _result, conn = await self._open_stream({"op": "watch", "path": path, "recursive": recursive})
        return _watch_events(conn)


async def _watch_events(conn: AgentConnection) -> AsyncIterator[WatchEvent]:
    """The agent's event lines; closing the iterator hangs up, which ends the agent's watch."""
    try:
        while True:
            try:
                message, _fds = await conn.receive()
            except EOFError:
                return  # the watched directory went away: the agent said so and hung up
            event = message.get("event")
            if not isinstance(event, dict):
                raise BackendError(f"the sandbox's agent ended the watch: {message.get('error') or message}")
            yield cast(WatchEvent, event)
    finally:
        conn.close()


class AgentSessions(SandboxSessions):
    """Session state files in the sandbox's private `/tmp/.osbox/sessions/`, made by the agent."""

    def __init__(self, call: AgentCall) -> None:
        self._call = call

    async def create(self, session_id: str, cwd: str | None) -> str:
        state = f"{SESSION_STATE_DIR}/{session_id}"
        await self._call("session_init", state=state, cwd=cwd or None)
        return state

    async def drop(self, state_path: str) -> None:
        await self._call("session_drop", state=state_path)


def _env(env: Mapping[str, str] | None) -> dict[str, Any]:
    """The `env` argument as the agent takes it (left out when there is none, as before)."""
    return {} if env is None else {"env": dict(env)}
