"""A foreground command ends with its stream: a client that drops it leaves no process behind.

The reference execd keeps a foreground command running after its client has gone (wire-behaviour
§1.4), which leaves an interrupted `osbox exec` or a crashed script's commands running unseen.
osbox kills the command's process group (SIGKILL) when the response ends before the command
has: the client disconnected (noticed at once, or at the next write, a keepalive ping at most
3 s later). `ServerConfig.kill_on_disconnect = False` keeps the reference's behaviour.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from starlette.responses import Response

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .runner import Execution

__all__ = ["kill_on_disconnect"]


class _KillOnDisconnect(Response):
    """Serves `inner`; if it ends while the command still runs, the client is gone: kill it."""

    def __init__(self, inner: Response, execution: Execution) -> None:
        # No Response.__init__: the inner response carries the status, headers and body.
        self._inner = inner
        self._execution = execution
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        finally:
            process = self._execution.process
            if process is not None and self._execution.running:
                process.signal_group(signal.SIGKILL)


def kill_on_disconnect(response: Response, execution: Execution) -> Response:
    """`response`, killing `execution`'s process group if the client leaves before it exits."""
    return _KillOnDisconnect(response, execution)
