"""A streamed run ends with its stream: a client that drops it leaves no process behind.

The reference execd keeps a foreground command running after its client has gone (wire-behaviour
§1.4), which leaves an interrupted `osbox exec` or a crashed script's commands running unseen.
osbox kills the run's process group (SIGKILL) when the response ends before the run has: the
client disconnected (noticed at once, or at the next write, a keepalive ping at most 3 s later).
This holds for foreground commands, session runs and bash-context cells alike (not for background
commands). A python cell is interrupted instead (SIGINT to its kernel, which outlives any one client
and stays usable; a kernel that ignores it is restarted, see `code`).

Configurable: the server's default is `ServerConfig.kill_on_disconnect` (`osbox serve
--keep-on-disconnect` keeps the reference's behaviour); one request chooses for itself with osbox's
header `OSBOX-ON-DISCONNECT: kill|keep`, and the response says which applies (same header).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from starlette.responses import Response

from osbox._wire import ON_DISCONNECT_HEADER, ON_DISCONNECT_KEEP, ON_DISCONNECT_KILL

from .errors import bad_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.datastructures import Headers
    from starlette.types import Receive, Scope, Send

    from .runner import Execution

__all__ = ["kill_wanted", "on_disconnect", "stop_on_disconnect"]


class _StopOnDisconnect(Response):
    """Serves `inner`; if it ends while `running()` still says so, the client is gone: `stop()`."""

    def __init__(self, inner: Response, running: Callable[[], bool], stop: Callable[[], None]) -> None:
        # No Response.__init__: the inner response carries the status, headers and body.
        self._inner = inner
        self._running = running
        self._stop = stop
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        finally:
            if self._running():
                self._stop()


def kill_wanted(headers: Headers, default: bool) -> bool:
    """Whether a dropped stream kills the run: the request's `OSBOX-ON-DISCONNECT`, else `default`."""
    value = headers.get(ON_DISCONNECT_HEADER)
    if value is None:
        return default
    choice = value.strip().lower()
    if choice not in (ON_DISCONNECT_KILL, ON_DISCONNECT_KEEP):
        raise bad_request(f"{ON_DISCONNECT_HEADER} must be {ON_DISCONNECT_KILL!r} or {ON_DISCONNECT_KEEP!r}")
    return choice == ON_DISCONNECT_KILL


def on_disconnect(response: Response, execution: Execution, *, kill: bool) -> Response:
    """A run's stream as answered: says whether a dropped stream kills it, and does so if it does."""

    def sigkill() -> None:
        if execution.process is not None:
            execution.process.signal_group(signal.SIGKILL)

    return stop_on_disconnect(response, lambda: execution.running, sigkill, kill=kill)


def stop_on_disconnect(
    response: Response, running: Callable[[], bool], stop: Callable[[], None], *, kill: bool
) -> Response:
    """A stream as answered: says whether a dropped stream stops what it follows (`kill`), and if it
    does, calls `stop()` when the response ends while `running()`."""
    response.headers[ON_DISCONNECT_HEADER] = ON_DISCONNECT_KILL if kill else ON_DISCONNECT_KEEP
    return _StopOnDisconnect(response, running, stop) if kill else response
