"""The execd API of `osbox serve`: commands, sessions, code contexts, files, directories, metrics, PTYs.

One `ExecdService` serves every sandbox. The server shell's proxy authenticates a request,
rewrites its `path` to the execd path (e.g. `/command`) and hands it over with its target sandbox,
which travels in the request's typed state (`request_state.py`):

    service = ExecdService()
    await service.serve(handle, scope, receive, send)   # after auth + handle lookup
    ...
    await service.forget(sandbox_id)   # on delete/expiry: kills its commands, drops its state
    await service.aclose()             # on shutdown
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from osbox.server._backend.base import SandboxHandle

from .app import build_app
from .code import CodeApi
from .commands import CommandsApi
from .metrics import MetricsApi
from .pty import PtyApi
from .request_state import ExecdRequestState, with_request_state
from .sessions import SessionsApi
from .state import ExecdLimits, StateStore

__all__ = ["ExecdLimits", "ExecdService"]


class ExecdService:
    """Per-sandbox execd state plus the ASGI app that serves it.

    `log_dir`: where command logs go (one subdirectory per sandbox); a private temp dir when
    omitted, removed by `aclose`. `limits`: what one sandbox may hold at once.
    """

    def __init__(self, log_dir: Path | None = None, limits: ExecdLimits | None = None) -> None:
        self._store = StateStore(log_dir, limits)
        self._sessions = SessionsApi(self._store)
        self._metrics = MetricsApi()
        commands = CommandsApi(self._store, self._sessions.delete)
        code = CodeApi(self._store, commands.start)
        self._pty = PtyApi()
        self.app: ASGIApp = build_app(commands, self._sessions, code, self._metrics, self._pty)

    async def serve(self, handle: SandboxHandle, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one execd request (HTTP or WebSocket) for the sandbox behind `handle`."""
        await self.app(with_request_state(scope, ExecdRequestState(sandbox=handle)), receive, send)

    def app_for(self, handle: SandboxHandle) -> ASGIApp:
        """An ASGI app serving `handle`'s execd API alone (for tests and tools that mount one sandbox)."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            else:
                await self.serve(handle, scope, receive, send)

        return app

    async def forget(self, sandbox_id: str) -> None:
        """Kill the sandbox's running commands, session runs and kernels, and drop all its state."""
        state = self._store.pop(sandbox_id)
        self._metrics.forget(sandbox_id)
        await self._pty.forget(sandbox_id)
        if state is not None:
            ends = [run.kill() for run in state.executions()] + [c.close() for c in state.contexts.values()]
            await asyncio.gather(*ends, return_exceptions=True)
        self._store.discard(sandbox_id)

    async def aclose(self) -> None:
        """Forget every sandbox and remove the service's temp files."""
        for state in self._store.all():
            await self.forget(state.sandbox_id)
        await self._pty.aclose()
        self._store.close()
