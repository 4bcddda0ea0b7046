"""Server-wide settings shared by the lifecycle app, the proxy and the runners."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """How one `osbox serve` instance behaves.

        config = ServerConfig(data_dir=Path("/var/lib/osbox"), api_key="s3cret")

    `api_key=None` disables authentication (fine on loopback; `osbox serve` warns otherwise).
    `min_timeout_seconds` is the smallest accepted sandbox `timeout`: the spec says 60, tests lower it
    to exercise expiry quickly.
    """

    data_dir: Path
    api_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    min_timeout_seconds: int = 60
    max_timeout_seconds: int | None = None
    default_pids_limit: int = 512
    #: Largest log/event text returned inline by the diagnostics API.
    diagnostics_max_bytes: int = 256 * 1024
    #: Destroy every sandbox on shutdown (LocalServer) or keep them for re-adoption (`osbox serve`).
    destroy_on_shutdown: bool = False
    #: End every sandbox when the server's process ends, however it ends (SIGKILL included): for
    #: ephemeral servers (LocalServer), whose sandboxes nobody would ever re-adopt. `osbox serve`
    #: leaves it off, so its sandboxes survive a restart.
    sandboxes_die_with_server: bool = False
    #: Sandboxes kept started ahead of time (bwrap + agent, no owner yet); a create without volumes
    #: takes one instead of starting its own, and the pool refills in the background. 0 disables it.
    #: Each costs an idle sandbox's memory (~6 MiB PSS); they are destroyed on shutdown.
    warm_pool_size: int = 2
    #: Disk space all snapshots together may take (their files' data; holes are free). A snapshot
    #: that would take more ends `Failed`, saying so.
    snapshots_max_bytes: int = 10 * 2**30

    @property
    def db_path(self) -> Path:
        """The SQLite file holding sandbox, snapshot and event records."""
        return self.data_dir / "osbox.db"

    @property
    def sandboxes_dir(self) -> Path:
        """Parent of every sandbox's private state directory."""
        return self.data_dir / "sandboxes"

    @property
    def snapshots_dir(self) -> Path:
        """Parent of every snapshot's copied files."""
        return self.data_dir / "snapshots"

    @property
    def volumes_dir(self) -> Path:
        """Parent of the named (`pvc`) volumes."""
        return self.data_dir / "volumes"
