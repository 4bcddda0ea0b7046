"""Server-wide settings shared by the lifecycle app, the proxy and the runners."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

if TYPE_CHECKING:
    from .egress.hostnet import HostNetworkConfig

__all__ = ["ServerConfig", "parse_mirrors"]

_GiB = 2**30


def parse_mirrors(text: str) -> dict[str, str]:
    """`"docker.io=mirror:5000,ghcr.io=other:5000"` -> {registry: mirror}; ValueError when malformed."""
    mirrors = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        registry, sep, mirror = item.partition("=")
        if not sep or not registry.strip() or not mirror.strip():
            raise ValueError(
                "a registry mirror must look like REGISTRY=MIRROR "
                f"(e.g. docker.io=127.0.0.1:5000), not {item!r}"
            )
        mirrors[registry.strip()] = mirror.strip()
    return mirrors


def _env_mirrors() -> dict[str, str]:
    return parse_mirrors(os.environ.get("OSBOX_REGISTRY_MIRRORS", ""))


NetworkSwitch = Literal["none", "open", "filtered"]


def _env_network() -> NetworkSwitch:
    value = os.environ.get("OSBOX_NETWORK", "open").strip().lower()
    if value not in get_args(NetworkSwitch):
        raise ValueError(f"OSBOX_NETWORK must be one of none, open, filtered, not {value!r}")
    return cast(NetworkSwitch, value)


def _env_image_store() -> Path | None:
    value = os.environ.get("OSBOX_IMAGE_STORE")
    return Path(value) if value else None


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
    #: What a create gets when its `resourceLimits` leaves cpu or memory out (None: no limit).
    default_cpu_cores: float | None = 1.0
    default_memory_bytes: int | None = 2 * _GiB
    default_pids_limit: int = 512
    #: Cap on what a sandbox can write (/workspace, /tmp, its home; not volumes) when the request
    #: gives no `resourceLimits["ephemeral-storage"]`; a request may ask for up to `max_disk_bytes`.
    #: Kernel-enforced (a sparse image per sandbox) where the server is root with loop devices.
    default_disk_bytes: int = 10 * _GiB
    max_disk_bytes: int = 100 * _GiB
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
    #: Per sandbox, at once: commands running (or whose output a process they left still holds),
    #: bash sessions, code contexts. One more answers 429 `LIMIT_EXCEEDED`: one sandbox cannot use
    #: up the server's descriptors (each running command holds 4-5) for the others.
    max_running_commands: int = 64
    max_sessions: int = 32
    max_code_contexts: int = 16
    #: Each command's output log on the host keeps its newest this many bytes.
    command_log_max_bytes: int = 64 * 1024 * 1024
    #: A foreground command whose client drops its stream is killed (its process group, SIGKILL), so
    #: nothing is left behind; False keeps it running, as the reference execd does.
    kill_on_disconnect: bool = True
    #: Request-head limits, enforced by the HTTP protocol before authentication (`headlimits.py`):
    #: request line + headers at most this many bytes and headers (431), the URL at most this long (414).
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_url_bytes: int = 16 * 1024
    #: Disk space all snapshots together may take (their files' data; holes are free). A snapshot
    #: that would take more ends `Failed`, saying so.
    snapshots_max_bytes: int = 10 * 2**30
    #: Where pulled images and their unpacked layers live (`server/images`); None: `data_dir/images`.
    #: Several servers may share one store (it locks across processes): `$OSBOX_IMAGE_STORE`.
    image_store_dir: Path | None = field(default_factory=_env_image_store)
    #: Pulled images and layers above this evict the least recently used images no sandbox uses.
    image_store_max_bytes: int = 20 * _GiB
    #: A pull that takes longer fails its create, saying so.
    image_pull_timeout_seconds: float = 600.0
    #: Registry mirrors ({"docker.io": "127.0.0.1:5000"}): `python:3.12` is pulled from the mirror
    #: and keeps its name. `$OSBOX_REGISTRY_MIRRORS` ("docker.io=host:port,...") sets the default.
    registry_mirrors: Mapping[str, str] = field(default_factory=_env_mirrors)
    #: Sandbox networks (README "Networking and egress"): the network of a sandbox created without a
    #: `networkPolicy`. "open" (the default): outbound access, isolated from the host and other
    #: sandboxes, where the server can give it (root with nftables; not root: pasta), else none and
    #: the sandbox's status and its `GET /policy` say why; "filtered": that under an egress policy
    #: (allow-all until one is set); "none": no sandbox has one and the host is left alone. A
    #: `networkPolicy` means "filtered" (any switch but "none"). `$OSBOX_NETWORK` sets the default.
    network: NetworkSwitch = field(default_factory=_env_network)
    #: The host side's layout (address pool, interface prefix, upstream DNS, ...); None: the defaults.
    network_host: HostNetworkConfig | None = None
    #: The CA bundle the credential proxy verifies upstream servers against (README "Credential
    #: injection"); None: the system's (/etc/ssl/certs/ca-certificates.crt).
    credential_proxy_upstream_ca: Path | None = None
    #: The credential proxy's log (`<data dir>/credential-proxy/proxy.log`) is rotated to `proxy.log.1`
    #: past this many bytes.
    credential_proxy_log_max_bytes: int = 8 << 20
    #: Seconds before restarting a crashed credential proxy, after the 1st, 2nd, ... crash in a row
    #: (the last repeats); each crash is a diagnostics event of the sandboxes with bindings.
    credential_proxy_restart_delays: tuple[float, ...] = (0.0, 1.0, 5.0, 30.0)

    @property
    def db_path(self) -> Path:
        """The SQLite file holding sandbox, snapshot and event records."""
        return self.data_dir / "osbox.db"

    @property
    def network_prefix_path(self) -> Path:
        """Where the sandbox network prefix this server claimed is kept (claimed first at a restart)."""
        return self.data_dir / "network-prefix"

    @property
    def secret_key_path(self) -> Path:
        """The server's key (0600) from which every sandbox's access tokens are derived."""
        return self.data_dir / "secret.key"

    @property
    def sandboxes_dir(self) -> Path:
        """Parent of every sandbox's private state directory."""
        return self.data_dir / "sandboxes"

    @property
    def snapshots_dir(self) -> Path:
        """Parent of every snapshot's copied files."""
        return self.data_dir / "snapshots"

    @property
    def images_dir(self) -> Path:
        """The image store's root (`image_store_dir`, else under the data dir)."""
        return self.image_store_dir or self.data_dir / "images"

    @property
    def volumes_dir(self) -> Path:
        """Parent of the named (`pvc`) volumes."""
        return self.data_dir / "volumes"
