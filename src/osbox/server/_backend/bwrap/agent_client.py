"""The server's side of the agent protocol: async unix-socket requests with fd passing.

One connection per request (`request`), except `spawn`, whose connection stays open to deliver
the exit status (`AgentConnection.receive` after the first reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..._agent.protocol import MAX_FDS, AgentError, LineBuffer, encode, exception_from_error
from ..base import BackendError, SandboxOSError
from .procs import wait_fd

__all__ = ["AgentConnection", "close_fds", "request", "unix_address"]

_SUN_PATH_MAX = 107


def close_fds(fds: Sequence[int]) -> None:
    """Close every fd, ignoring ones already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for the unix socket at `path`, however long the path (sun_path holds 107 bytes):
    the path itself, or one through an fd of its directory, valid inside the `with`."""
    if len(str(path).encode()) <= _SUN_PATH_MAX:
        yield str(path)
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


class AgentConnection:
    """One non-blocking connection to a sandbox's agent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = LineBuffer()

    @classmethod
    async def open(cls, path: Path) -> AgentConnection:
        """Connect to the agent listening at `path` (a host path in the state dir)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            with unix_address(path) as address:
                await asyncio.get_running_loop().sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            raise BackendError(f"the sandbox's agent is not reachable ({exc.strerror or exc})") from None
        return cls(sock)

    async def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one message, with `fds` attached to its first byte."""
        loop = asyncio.get_running_loop()
        data = encode(message)
        if fds:
            while True:
                try:
                    sent = socket.send_fds(self.sock, [data], list(fds))
                    break
                except BlockingIOError:
                    await wait_fd(self.sock.fileno(), writable=True)
            data = data[sent:]
        if data:
            await loop.sock_sendall(self.sock, data)

    async def receive(self) -> tuple[dict[str, Any], list[int]]:
        """The next message and the fds that came with it. Raises EOFError if the agent hung up."""
        fds: list[int] = []
        try:
            while True:
                message = self._buffer.next_message()
                if message is not None:
                    return message, fds
                try:
                    data, new_fds, _flags, _addr = socket.recv_fds(self.sock, 65536, MAX_FDS)
                except BlockingIOError:
                    await wait_fd(self.sock.fileno())
                    continue
                fds.extend(new_fds)
                if not data:
                    raise EOFError("the agent closed the connection")
                self._buffer.feed(data)
        except BaseException:
            close_fds(fds)
            raise

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


async def request(
    socket_path: Path, message: dict[str, Any], fds: Sequence[int] = (), *, keep: bool = False
) -> tuple[Any, list[int], AgentConnection | None]:
    """Send one request; returns (result, received fds, connection if `keep` else None).

    Errors from the op are raised as `SandboxOSError` / `ValueError`; a lost or broken agent as
    `BackendError`.
    """
    conn = await AgentConnection.open(socket_path)
    try:
        await conn.send(message, fds)
        reply, received = await conn.receive()
    except (EOFError, ConnectionError) as exc:
        conn.close()
        raise BackendError(f"the sandbox's agent went away during {message.get('op')!r}: {exc}") from None
    except AgentError as exc:
        conn.close()
        raise BackendError(f"bad reply from the sandbox's agent: {exc}") from None
    except BaseException:
        conn.close()
        raise
    if not reply.get("ok"):
        conn.close()
        close_fds(received)
        error = exception_from_error(reply.get("error"), SandboxOSError)
        if isinstance(error, AgentError):
            raise BackendError(f"sandbox agent: {error}")
        raise error
    if len(received) != int(reply.get("nfds") or 0):
        conn.close()
        close_fds(received)
        raise BackendError("the sandbox's agent sent the wrong number of descriptors")
    if keep:
        return reply.get("result"), received, conn
    conn.close()
    return reply.get("result"), received, None
