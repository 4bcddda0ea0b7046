"""A real `osbox serve` (in-process, `AsyncLocalServer`) whose sandboxes reach the fake internet.

    public  (198.18.0.0/24: DNS 198.18.0.2, HTTP on the HOSTS)  -- veth `to-pub` --  host
    host    a namespace of the test's playing the machine: the server's `HostNetwork` runs in it
            (`network_host.host_netns`), so the machine's own routes, sysctls and nft stay untouched
       | veths made per sandbox (pool 100.96.0.0/16)
    bwrap sandboxes (real ones, `--unshare-all`), their DNS redirected to the server's resolvers

The server itself listens on the machine's loopback, as always; sandboxes never see it.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from osbox import AsyncLifecycleClient, AsyncSandbox
from osbox.server import AsyncLocalServer
from osbox.server.egress.hostnet import DEFAULT_POOL, HostNetworkConfig

from .fake_internet import DNS_ADDRESS, public_servers, wire_public
from .netns import netns_path, network_namespaces, run_in

__all__ = ["API_KEY", "CURL", "Served", "fake_public", "served_internet"]

API_KEY = "egress-test-key"
CURL = "curl -sS --max-time 5 --connect-timeout 5"


@dataclass
class Served:
    """The running server and the test's namespaces (`host`, `public`)."""

    server: AsyncLocalServer
    names: dict[str, str]
    given_prefix: str | None

    @property
    def prefix(self) -> str:
        """The server's interface prefix: the one given, or the one it claimed (kept in its data dir)."""
        if self.given_prefix is not None:
            return self.given_prefix
        assert self.server.config is not None
        return self.server.config.network_prefix_path.read_text().strip()

    @property
    def host(self) -> str:
        return self.names["host"]

    @property
    def port(self) -> int:
        """The server's port on the machine's loopback (which no sandbox may reach)."""
        port = urlsplit(self.server.base_url).port
        assert port is not None
        return port

    def lifecycle(self) -> AsyncLifecycleClient:
        """A lifecycle client of the server (close it after use)."""
        return AsyncLifecycleClient(f"{self.server.base_url}/v1", API_KEY)

    async def sandbox(self, **fields: Any) -> AsyncSandbox:
        """A sandbox created through the SDK (a context manager: it is deleted on exit)."""
        return await AsyncSandbox.create(base_url=f"{self.server.base_url}/v1", api_key=API_KEY, **fields)

    async def host_links(self) -> list[str]:
        """The host namespace's interfaces named like the server's sandbox host ends."""
        listed = await run_in(self.host, "ip", "-o", "link", "show")
        names = [line.split(":")[1].strip().split("@")[0] for line in listed.stdout.splitlines()]
        return [name for name in names if name.startswith(f"{self.prefix}-")]

    async def host_table(self) -> str:
        """The server's host nft table ("" when there is none)."""
        listed = await run_in(self.host, "nft", "list", "table", "inet", f"{self.prefix}_host")
        return listed.stdout if listed.returncode == 0 else ""


def network_host(host: str, prefix: str | None, pool: IPv4Network | None = DEFAULT_POOL) -> HostNetworkConfig:
    """The host side in the test's `host` namespace; the fake internet is on-link there (not a LAN to
    protect), its DNS is the upstream."""
    return HostNetworkConfig(
        prefix=prefix,
        pool=pool,
        upstream_dns=DNS_ADDRESS,
        uplinks=("to-pub",),
        protect_lans=False,
        host_netns=netns_path(host),
    )


@contextlib.asynccontextmanager
async def fake_public() -> AsyncIterator[dict[str, str]]:
    """The `host` and `public` namespaces, linked, with the public DNS and HTTP servers running."""
    async with network_namespaces(["host", "public"]) as names:
        wire_public(names["host"], names["public"])
        async with public_servers(names["public"]):
            yield names


@contextlib.asynccontextmanager
async def served_internet(
    names: dict[str, str] | None = None,
    *,
    network: str | None = "open",
    data_dir: Path | None = None,
    prefix: str | None = None,
    keep: bool = False,
    pool: IPv4Network = DEFAULT_POOL,
    claim: bool = False,
    **config: Any,
) -> AsyncIterator[Served]:
    """An `AsyncLocalServer` with sandbox networks in `names` (default: a fresh fake internet); with
    `keep`, its sandboxes outlive it (to be re-adopted by the next one on `data_dir`). `network=None`:
    the server's default. `claim`: no prefix or pool given, the server claims a free slot as
    `osbox serve` does."""
    if keep:
        config = {"destroy_on_shutdown": False, "sandboxes_die_with_server": False, **config}
    async with contextlib.AsyncExitStack() as stack:
        if names is None:
            names = await stack.enter_async_context(fake_public())
        if not claim:
            prefix = prefix or f"ot{secrets.token_hex(2)}"
        if network is not None:
            config["network"] = network
        server = AsyncLocalServer(
            data_dir,
            api_key=API_KEY,
            network_host=network_host(names["host"], prefix, None if claim else pool),
            **{"warm_pool_size": 0, "min_timeout_seconds": 1, **config},
        )
        await stack.enter_async_context(server)
        yield Served(server, names, prefix)


def run_host(*argv: str) -> subprocess.CompletedProcess[str]:
    """A command on the machine itself (e.g. `ip -o link`), for leak checks."""
    return subprocess.run(argv, capture_output=True, text=True, check=False)
