"""The fake internet seen through the runtime's host side (`HostNetwork`), with stand-in sandboxes.

    public  (198.18.0.0/24: DNS 198.18.0.2, HTTP on the HOSTS) -- veth -- host
    lan     (10.9.0.2, HTTP: a private network of the host's)  -- veth -- host (10.9.0.1)
    host    a namespace playing the machine: `HostNetwork` runs in it (host_netns), uplink `to-pub`
       | veths made by HostNetwork.attach (pool 100.96.0.0/16)
    sandbox namespaces: plain `ip netns add` ones, stand-ins for bwrap's `--unshare-net` namespaces

Nothing outside these namespaces is touched or reached: the machine's own namespace, routes and sysctls
stay as they were.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from osbox.server.egress.hostnet import HostNetwork, HostNetworkConfig

from .fake_internet import DNS_ADDRESS, HOSTS, http_server, public_servers, wire_public, write_resolv_conf
from .netns import NETNS_PREFIX, netns_path, network_namespaces, run, run_in

__all__ = ["LAN_HOST", "HostSide", "host_side", "stand_in_sandbox"]

LAN_HOST = "10.9.0.2"
"""An HTTP server on a private network the host is connected to (protected unless excepted)."""
PREFIX = "osbt"


@dataclass
class HostSide:
    """The namespaces and the `HostNetwork` running in the host one."""

    names: dict[str, str]
    network: HostNetwork
    config: HostNetworkConfig
    made: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.names["host"]

    async def links(self) -> list[str]:
        """The host's interfaces named like sandbox host ends."""
        listed = await run_in(self.host, "ip", "-o", "link", "show")
        return [
            line.split(":")[1].strip().split("@")[0]
            for line in listed.stdout.splitlines()
            if line.split(":")[1].strip().startswith(f"{PREFIX}-")
        ]

    async def table(self) -> str:
        """The host table as nft lists it ("" when there is none)."""
        listed = await run_in(self.host, "nft", "list", "table", "inet", f"{PREFIX}_host")
        return listed.stdout if listed.returncode == 0 else ""


def host_config(host: str, *, protect_lans: bool = False) -> HostNetworkConfig:
    """The fake internet is on-link to the host here (198.18.0.0/24 on `to-pub`), so LANs are not
    protected unless asked: the private 10.9.0.0/24 still is, as a private range."""
    return HostNetworkConfig(
        prefix=PREFIX,
        upstream_dns=DNS_ADDRESS,
        uplinks=("to-pub", "to-lan"),
        protect_lans=protect_lans,
        host_netns=netns_path(host),
    )


@contextlib.asynccontextmanager
async def host_side() -> AsyncIterator[HostSide]:
    """The namespaces above, the public servers, the LAN server and a started `HostNetwork`."""
    async with network_namespaces(["host", "public", "lan"]) as names:
        host, lan = names["host"], names["lan"]
        wire_public(host, names["public"])
        run("ip", "-n", host, "link", "add", "to-lan", "type", "veth", "peer", "name", "eth0", "netns", lan)
        run("ip", "-n", host, "addr", "add", "10.9.0.1/24", "dev", "to-lan")
        run("ip", "-n", host, "link", "set", "to-lan", "up")
        run("ip", "-n", lan, "addr", "add", f"{LAN_HOST}/24", "dev", "eth0")
        run("ip", "-n", lan, "link", "set", "eth0", "up")
        run("ip", "-n", lan, "route", "add", "default", "via", "10.9.0.1")
        lan_server = await http_server(lan, LAN_HOST, "lan")
        config = host_config(host)
        try:
            async with public_servers(names["public"]):
                network = await HostNetwork.start(config)
                try:
                    yield HostSide(names, network, config)
                finally:
                    await network.close()
        finally:
            lan_server.close()
            await lan_server.wait_closed()


@contextlib.asynccontextmanager
async def stand_in_sandbox() -> AsyncIterator[str]:
    """A fresh, empty network namespace (name `osbxt-…-sandbox`), removed after."""
    async with network_namespaces([f"sbx{secrets.token_hex(2)}"]) as names:
        (name,) = names.values()
        assert name.startswith(NETNS_PREFIX)
        yield name


def use_nameserver(sandbox: str, nameserver: str | None) -> None:
    """Point the stand-in's resolv.conf (as `ip netns exec` shows it) at `nameserver`."""
    assert nameserver is not None
    write_resolv_conf(sandbox, nameserver)


async def fetch(netns: str, url: str) -> subprocess.CompletedProcess[str]:
    """curl `url` from inside `netns` (its resolv.conf overlay applies), failing fast."""
    return await run_in(netns, "curl", "-sS", "--max-time", "3", "--connect-timeout", "3", url)


async def reaches(netns: str, url: str, page: str) -> bool:
    """Whether a GET of `url` from `netns` returns `page`."""
    done = await fetch(netns, url)
    return done.returncode == 0 and done.stdout == page


__all__ += ["HOSTS", "fetch", "host_config", "reaches", "use_nameserver"]
