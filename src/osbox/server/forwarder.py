"""Direct endpoints: on-demand TCP forwarders from a host port to a port inside a sandbox.

Each (sandbox, port) pair gets one listening socket on a free host port; every accepted
connection is relayed byte for byte to `handle.connect(port)`, so HTTP, WebSockets and raw TCP all
work and two sandboxes never clash on a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ._backend.base import SandboxHandle

__all__ = ["ForwarderPool", "relay"]

_log = logging.getLogger("osbox.server.forwarder")
_CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def relay(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until both directions are closed, then close both streams."""
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Forwarder:
    """One listening socket and the client connections it has accepted."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.clients):  # Python 3.11 has no Server.close_clients()
            writer.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), timeout=5)


class ForwarderPool:
    """The forwarders of every sandbox; `lookup(sandbox_id)` gives the live handle (or raises)."""

    def __init__(self, host: str, lookup: Callable[[str], SandboxHandle]) -> None:
        self._host = host
        self._lookup = lookup
        self._forwarders: dict[tuple[str, int], _Forwarder] = {}
        self._lock = asyncio.Lock()

    async def open(self, sandbox_id: str, port: int) -> int:
        """The host port forwarding to `port` in the sandbox, started on first use."""
        async with self._lock:
            forwarder = self._forwarders.get((sandbox_id, port))
            if forwarder is None:
                forwarder = _Forwarder()
                forwarder.server = await asyncio.start_server(
                    lambda r, w: self._serve(forwarder, sandbox_id, port, r, w), host=self._host, port=0
                )
                self._forwarders[(sandbox_id, port)] = forwarder
            assert forwarder.server is not None
            return int(forwarder.server.sockets[0].getsockname()[1])

    async def _serve(
        self,
        forwarder: _Forwarder,
        sandbox_id: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        forwarder.clients.add(writer)
        try:
            try:
                upstream = await self._lookup(sandbox_id).open_connection(port)
            except Exception as exc:  # refused, sandbox paused or gone: drop the client connection
                _log.info("forwarding to sandbox %s port %d failed: %s", sandbox_id, port, exc)
                writer.close()
                return
            forwarder.clients.add(upstream[1])
            try:
                await relay((reader, writer), upstream)
            finally:
                forwarder.clients.discard(upstream[1])
        finally:
            forwarder.clients.discard(writer)

    async def close_sandbox(self, sandbox_id: str) -> None:
        """Stop every forwarder of one sandbox (it was deleted or expired)."""
        async with self._lock:
            keys = [key for key in self._forwarders if key[0] == sandbox_id]
            forwarders = [self._forwarders.pop(key) for key in keys]
        for forwarder in forwarders:
            await forwarder.stop()

    async def close(self) -> None:
        """Stop every forwarder."""
        async with self._lock:
            forwarders = list(self._forwarders.values())
            self._forwarders.clear()
        for forwarder in forwarders:
            await forwarder.stop()
