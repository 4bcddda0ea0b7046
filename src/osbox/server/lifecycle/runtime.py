"""Everything one server instance owns, started and stopped together: store, backend, managers."""

from __future__ import annotations

from starlette.types import ASGIApp

from .._backend import default_backend
from .._backend.base import Backend, SandboxHandle
from .._store import Store
from ..execd import ExecdService
from .config import ServerConfig
from .forwarder import ForwarderPool
from .manager import SandboxManager
from .snapshots import SnapshotManager

__all__ = ["Runtime"]


def _default_backend(config: ServerConfig) -> Backend:
    return default_backend(
        config.data_dir,
        pool_size=config.warm_pool_size,
        die_with_server=config.sandboxes_die_with_server,
        pool_disk_bytes=config.default_disk_bytes,
    )


class Runtime:
    """The server's state. Construct, `await start()` inside the event loop, `await close()` at the end."""

    def __init__(self, config: ServerConfig, backend: Backend | None = None) -> None:
        self.config = config
        self._given_backend = backend
        self._execd: ExecdService
        self.store: Store
        self.backend: Backend
        self.manager: SandboxManager
        self.snapshots: SnapshotManager
        self.forwarders: ForwarderPool

    async def start(self) -> None:
        """Open the store, start the backend, re-adopt surviving sandboxes, start the reaper."""
        for directory in (self.config.data_dir, self.config.sandboxes_dir, self.config.snapshots_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.config.data_dir.chmod(0o711)  # sandbox users may traverse to their own state dirs only
        self.store = Store(self.config.db_path)
        self.backend = self._given_backend or _default_backend(self.config)
        self.manager = SandboxManager(self.config, self.store, self.backend)
        self.snapshots = SnapshotManager(self.config, self.store, self.manager)
        self.forwarders = ForwarderPool(self.config.host, self.sandbox_handle)
        self.manager.add_forget_hook(self.forwarders.close_sandbox)
        self._execd = ExecdService(log_dir=self.config.data_dir / "execd")
        self.manager.add_forget_hook(self._execd.forget)
        self.snapshots.start()
        await self.manager.start()
        await self.backend.start()  # after re-adoption: a warm pool's start-ups compete for the CPU

    @property
    def execd_app(self) -> ASGIApp:
        """The execd ASGI app the proxy dispatches port 44772 to."""
        return self._execd.app

    def sandbox_handle(self, sandbox_id: str) -> SandboxHandle:
        """The live handle of a Running sandbox (404/409 ApiError otherwise)."""
        return self.manager.handle(sandbox_id)

    def execd_token(self, sandbox_id: str) -> str:
        """The per-sandbox execd access token (404 ApiError for an unknown sandbox)."""
        return self.manager.tokens(sandbox_id)[0]

    async def close(self) -> None:
        """Stop forwarders and copies, destroy or keep sandboxes per config, release everything."""
        try:
            await self.forwarders.close()
            await self.snapshots.close()
            await self.manager.close()
            await self._execd.aclose()
            await self.backend.close()
        finally:
            self.store.close()
