"""Sandbox networks for a server that is not root: a user-mode stack per sandbox, from `pasta` (Debian
`passt`).

Without root there are no veths, no NAT and no host nft table. Instead each sandbox's namespace (which
bwrap created inside a user namespace the server's uid owns) gets a `pasta` of its own, attached to it by
path (`--userns /proc/<pid>/ns/user --netns /proc/<pid>/ns/net`): a tap `eth0` inside, with the same
addresses in every sandbox (`ADDRESS`/30, gateway `GATEWAY`), whose connections pasta makes from the
host's side as ordinary sockets of the server's user. It is started with

* `--no-map-gw`: the gateway is not the host's loopback (pasta maps it there by default), and
  `-t none -u none -T none -U none`: no port forwarded either way (by default pasta forwards the host's
  bound ports into the namespace's loopback): the host's loopback services, the server included, stay
  out of reach;
* `-4`, `--config-net`, `-f`: IPv4 only, pasta configures the interface and route, and stays the
  server's child (started through `setpriv --pdeathsig KILL`: it dies with the server however that
  ends). pasta keeps the namespace alive itself, so it would outlive the sandbox: the server watches
  the sandbox's PID 1 (a pidfd) and ends its pasta when that ends, as `detach` does.

Entering the sandbox's user namespace (`nsenter --preserve-credentials`) gives the server every
capability there, so it also loads a table `inet osbox` into the namespace (the workload, whose
capabilities bwrap dropped, cannot change it): DNS to any address (the gateway its resolv.conf names
included) redirected to the upstream resolver, which pasta reaches like any other host, and the
`protected` networks refused (private ranges, the host's addresses and LANs, the gateway): pasta would
otherwise connect a sandbox to any address the host reaches, its LAN services included. An upstream on
the host's loopback (systemd-resolved's 127.0.0.53) is out of reach that way: the server then needs
`--dns-upstream`. (pasta's own `--dns-forward` of this version forwards to resolv.conf's first
nameserver, whatever `--dns` says.)

Only mode `open` is given: the egress engine (`filtered`) works on the host side of a veth and from
threads that enter the namespace, which a process without root cannot; a policy therefore fails its
create with `ROOTLESS_POLICY`, never running unfiltered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import IO

from .hostnet import (
    Attachment,
    HostNetworkConfig,
    NetworkUnavailable,
    _read_host,
    _resolv_conf_nameserver,
    _run,
)
from .netns import SocketFactory
from .nft import TABLE, interval_elements
from .policy import IPNetwork

__all__ = ["ADDRESS", "GATEWAY", "ROOTLESS_POLICY", "PastaNetwork", "render_isolation"]

_log = logging.getLogger(__name__)

ADDRESS = IPv4Address("100.95.0.2")
GATEWAY = IPv4Address("100.95.0.1")
"""Every rootless sandbox's address and gateway (also its nameserver): each is alone in its namespace."""
ROOTLESS_POLICY = (
    "egress policies need root (the policy engine works on the host side of a veth); this server is "
    "not root, so its sandboxes get an open network or none"
)
_READY_TIMEOUT = 10.0
_PROC_NETNS = re.compile(r"/proc/(\d+)/ns/net")


class PastaNetwork:
    """The rootless host side: one pasta per sandbox. Same calls as `HostNetwork` (`start`, `attach`,
    `detach`, `sweep`, `close`), so `SandboxNetworks` uses either."""

    def __init__(
        self, config: HostNetworkConfig, upstream: tuple[str, int], protected: tuple[IPNetwork, ...]
    ):
        """Use `PastaNetwork.start`, which checks the machine."""
        self.config = config
        self.upstream_dns: tuple[str, int] | None = upstream
        self.protected = protected
        """What a sandbox may not reach: the private ranges, the host's addresses and (`protect_lans`)
        its on-link networks."""
        self.attachments: dict[str, Attachment] = {}
        self._pastas: dict[str, asyncio.subprocess.Process] = {}
        self._unwatch: dict[str, Callable[[], None]] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, config: HostNetworkConfig | None = None) -> PastaNetwork:
        """Check that pasta can run here; `NetworkUnavailable` saying why not."""
        config = config or HostNetworkConfig()
        for tool, package in (("pasta", "passt"), ("nsenter", "util-linux"), ("setpriv", "util-linux")):
            if shutil.which(tool) is None:
                raise NetworkUnavailable(
                    f"no network: the server is not root and {tool} is not installed "
                    f"(apt-get install {package})"
                )
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise NetworkUnavailable(
                "no network: the server is not root and cannot open /dev/net/tun, which pasta needs "
                "(udev normally makes it mode 0666)"
            )
        upstream = config.upstream_dns or _resolv_conf_nameserver()
        if upstream is None:
            raise NetworkUnavailable("no network: no upstream DNS server (no nameserver in /etc/resolv.conf)")
        upstream_ip = ipaddress.ip_address(upstream[0])
        if upstream_ip.is_loopback or upstream_ip.version != 4:
            raise NetworkUnavailable(
                f"no network: the server is not root and its DNS server {upstream[0]} is not an IPv4 address "
                "a sandbox can reach through pasta (loopback is out of bounds); start it with --dns-upstream"
            )
        host = await _read_host(config.host_netns)
        lans = host.connected if config.protect_lans else []
        protected = (
            *config.protected,
            *(ipaddress.ip_network(a) for a in host.addresses),
            *lans,
        )
        return cls(config, upstream, protected)

    @property
    def socket_factory(self) -> SocketFactory:
        """Sockets of the server's own namespace (no resolver of osbox's runs for rootless sandboxes)."""
        return socket.socket

    async def attach(self, sandbox_id: str, netns: str) -> Attachment:
        """Start the sandbox's pasta on the namespace at `netns` (`/proc/<pid>/ns/net`, whose process's
        user namespace owns it) and load its isolation table; returns when `eth0` is configured.
        Nothing is left behind when it fails."""
        found = _PROC_NETNS.fullmatch(netns)
        if found is None:
            raise NetworkUnavailable(f"no network: rootless networks need a process's namespace, not {netns}")
        userns = f"/proc/{found.group(1)}/ns/user"
        async with self._lock:
            if sandbox_id in self.attachments:
                raise ValueError(f"sandbox {sandbox_id} is attached already")
            # Its messages go to a file, read if it fails: a pipe nobody drains could block it later.
            with tempfile.TemporaryFile() as messages:
                pasta = await asyncio.create_subprocess_exec(
                    *_pasta_argv(userns, netns, self.upstream_dns or ("", 53)),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=messages,
                )
                try:
                    await _wait_configured(pasta, userns, netns, messages)
                    isolation = render_isolation(self.protected, self.upstream_dns or ("", 53))
                    code, _, err = await _run(_enter(userns, netns, ["nft", "-f", "-"]), isolation)
                    if code != 0:
                        raise RuntimeError(f"nft in the sandbox's namespace: {err.strip()}")
                except BaseException:
                    await _end(pasta)
                    raise
            self._pastas[sandbox_id] = pasta
            self._unwatch[sandbox_id] = _end_with(int(found.group(1)), pasta)
            attachment = Attachment(sandbox_id, "eth0", ADDRESS, GATEWAY, netns)
            self.attachments[sandbox_id] = attachment
            return attachment

    async def detach(self, sandbox_id: str) -> None:
        """End the sandbox's pasta (its namespace keeps its loopback only); no-op when not attached."""
        async with self._lock:
            self.attachments.pop(sandbox_id, None)
            self._unwatch.pop(sandbox_id, lambda: None)()
            pasta = self._pastas.pop(sandbox_id, None)
            if pasta is not None:
                await _end(pasta)

    async def drop_stale_link(self, sandbox_id: str, interface: str | None = None) -> None:
        """Nothing to drop: a previous run's pastas died with it (`--pdeathsig`)."""
        del sandbox_id, interface

    async def set_exceptions(self, sandbox_id: str, networks: Iterable[IPNetwork]) -> None:
        """Policies are not enforced rootless (see the module docstring)."""
        raise NetworkUnavailable(ROOTLESS_POLICY)

    async def sweep(self, live_ids: Iterable[str]) -> dict[str, Attachment]:
        """End the pastas of sandboxes that are gone; nothing is adopted (see `drop_stale_link`)."""
        live = set(live_ids)
        for sandbox_id in [i for i in self.attachments if i not in live]:
            await self.detach(sandbox_id)
        return {}

    async def close(self) -> None:
        """End every pasta; sandboxes keep running with their loopback only until a restart attaches
        them again."""
        for sandbox_id in list(self.attachments):
            await self.detach(sandbox_id)


def render_isolation(protected: Iterable[IPNetwork], upstream: tuple[str, int]) -> str:
    """The `nft -f` script of a rootless sandbox's table: DNS to any address goes to the `upstream`
    resolver; the protected networks (and the gateway) are refused."""
    guarded = interval_elements([*(n for n in protected if n.version == 4), ipaddress.ip_network(GATEWAY)])
    dns = f"{upstream[0]}:{upstream[1]}"
    lines = [
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  set protected {",
        "    type ipv4_addr; flags interval;",
        f"    elements = {{ {', '.join(guarded)} }}",
        "  }",
        "  chain dns {",
        "    type nat hook output priority -100; policy accept;",
        f"    meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {dns}",
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oifname "lo" accept',
        "    ct state established,related accept",
        f"    ip daddr {upstream[0]} meta l4proto {{ tcp, udp }} th dport {upstream[1]} accept",
        "    ip daddr @protected goto refuse",
        "    meta nfproto ipv6 goto refuse",
        "  }",
        "  chain refuse {",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _pasta_argv(userns: str, netns: str, upstream: tuple[str, int]) -> list[str]:
    return [
        *("setpriv", "--pdeathsig", "KILL", "--"),
        *("pasta", "--foreground", "--quiet", "--ipv4-only", "--config-net", "--no-map-gw"),
        *("--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none"),
        *("--ns-ifname", "eth0", "--address", str(ADDRESS), "--netmask", "30", "--gateway", str(GATEWAY)),
        *("--dns", upstream[0], "--no-dhcp"),
        *("--userns", userns, "--netns", netns),
    ]


def _enter(userns: str, netns: str, argv: list[str]) -> list[str]:
    """`argv` inside the sandbox's user and network namespaces, with every capability there (the
    server's uid owns the user namespace); `--preserve-credentials`: bwrap denies setgroups."""
    return ["nsenter", "--preserve-credentials", f"--user={userns}", f"--net={netns}", "--", *argv]


async def _wait_configured(
    pasta: asyncio.subprocess.Process, userns: str, netns: str, messages: IO[bytes]
) -> None:
    """Until `eth0` has its address in the namespace; pasta's last message if it ends first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READY_TIMEOUT
    show = _enter(userns, netns, ["ip", "-j", "-4", "addr", "show", "dev", "eth0"])
    while loop.time() < deadline:
        if pasta.returncode is not None:
            messages.seek(0)
            lines = [x for x in messages.read().decode(errors="replace").splitlines() if "syslog" not in x]
            raise RuntimeError(f"pasta exited: {lines[-1] if lines else f'status {pasta.returncode}'}")
        code, out, _ = await _run(show)
        links = json.loads(out or "[]") if code == 0 else []
        if any(a.get("local") == str(ADDRESS) for link in links for a in link.get("addr_info", [])):
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"pasta did not configure the sandbox's interface within {_READY_TIMEOUT:g} s")


def _end_with(pid: int, pasta: asyncio.subprocess.Process) -> Callable[[], None]:
    """Stop `pasta` when the process `pid` (the sandbox's PID 1) ends, or at once if it has; returns
    what stops the watching."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pasta.send_signal(signal.SIGTERM)
        return lambda: None
    watching = True

    def unwatch() -> None:
        nonlocal watching
        if watching:
            watching = False
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def ended() -> None:
        unwatch()
        if pasta.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                pasta.send_signal(signal.SIGTERM)

    loop.add_reader(pidfd, ended)
    return unwatch


async def _end(pasta: asyncio.subprocess.Process) -> None:
    if pasta.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            pasta.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await pasta.wait()
        except TimeoutError:
            pasta.kill()
            await pasta.wait()
