"""The host side of sandbox networks: a veth per sandbox, addresses from a private pool, NAT, isolation.

One `HostNetwork` per server (root only: veths and nftables need CAP_NET_ADMIN)::

    network = await HostNetwork.start(HostNetworkConfig())
    adopted = await network.sweep(live_ids)           # after a restart: stale links removed
    attachment = await network.attach("sbx-1", "/proc/4242/ns/net")
    ...                                               # the sandbox reaches out through NAT
    await network.detach("sbx-1")
    await network.close()                             # every link and the server's nft table removed

Per sandbox, `attach` makes a veth pair: the host end `<prefix>-<hash of the id>` (15 characters at
most, the kernel's limit) with the pool block's first address, the other end created directly inside
the sandbox's namespace as `eth0` with the second address, default route via the host end, and `lo` up.
The pool is carved into /30 blocks (network, host end, sandbox, broadcast): a plain point-to-point subnet
every tool understands, 16384 sandboxes in the default /16. A sandbox's block is chosen from a hash of its
id (probing on), so a sandbox attached again after a restart gets the same addresses.

Servers on one machine never collide: `start` claims its prefix and pool host-wide (`hostslots.py`: a
lock-protected registry under /run/osbox/net, a claim held for the server's lifetime, released at
`close`, stale after a crash and then taken over, the new owner removing the old one's leftovers). Not
configured, a server takes the first free default slot (`osbx` with 100.96.0.0/16, `osbx1` with
100.97.0.0/16, ...), the one it had last time first (`remember_in`), so a restart finds its own links.
The default pools are in the shared address space (100.64.0.0/10, RFC 6598: carrier NAT, never routed on
the internet); `start` refuses a pool that overlaps any route of the host, so a clash is an error at
start, never a silent misroute. Configure another with `HostNetworkConfig(pool=…)`.

Isolation lives in the server's own nft table (see `host_nft.py`): a sandbox reaches neither the host (its
addresses, loopback services, the server's port: only DNS to its own resolver on its host-end address),
nor another sandbox, nor the `protected` networks (private ranges, the pool, the host's addresses and
LANs) unless `set_exceptions` lets it (the policy layer does so for IP/CIDR allow rules).

IPv4 forwarding is turned on for the host ends only and, on a host that is not a router
(`net.ipv4.conf.all.forwarding` 0), on the uplinks (the default routes' interfaces) for the sandboxes'
replies: the table routes nothing else in from those, and `close` sets them back to the host's global
value (unless another server on the machine still runs: the last one does).

Without root there are no veths: `start` raises `NetworkUnavailable` saying so; a server that is not
root gives its sandboxes a user-mode stack instead (`pasta.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from .host_nft import (
    render_exceptions,
    render_host_table,
    render_link,
    render_table_removal,
    render_unlink,
)
from .hostslots import DEFAULT_POOL, Claim, LayoutTaken, claim_layout
from .netns import SocketFactory, call_in_netns, netns_socket_factory
from .nft_runner import NftSession
from .policy import IPNetwork
from .rtnl import Rtnl
from .steps import all_of

__all__ = [
    "DEFAULT_POOL",
    "PRIVATE_NETWORKS",
    "Attachment",
    "HostNetwork",
    "HostNetworkConfig",
    "NetworkUnavailable",
]

_log = logging.getLogger(__name__)

PRIVATE_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # "This network", RFC 1918, shared address space (carrier NAT, and the pool), loopback, link-local
        # (cloud metadata at 169.254.169.254), IETF protocol assignments, multicast and reserved.
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    )
)  # fmt: skip
"""Networks no sandbox reaches unless its policy allows them by IP/CIDR (besides the host's addresses)."""

_BLOCK = 30  # each sandbox's subnet: /30
_IFNAMSIZ = 15
_PREFIX = re.compile(r"[a-z][a-z0-9]{1,5}")
_COMMAND_TIMEOUT = 10.0


class NetworkUnavailable(RuntimeError):
    """Sandboxes cannot have a network here; the message says why (safe to show users)."""


@dataclass(frozen=True, slots=True)
class HostNetworkConfig:
    """How the server's sandbox networks are laid out.

    `prefix` names the host ends (`<prefix>-…`) and the nft table (`inet <prefix>_host`), 2-6 lowercase
    letters/digits, and `pool` is where the sandboxes' addresses come from: None (the default) takes a
    free slot of the machine; given, they are claimed as they are (`start` fails when another running
    server holds that prefix or an overlapping pool). `remember_in` is a file of the server's where the
    claimed prefix is kept, tried first at the next start. `upstream_dns` is where the sandboxes' resolvers
    ask (None: the host's first `nameserver` in /etc/resolv.conf). `uplinks` are the interfaces sandbox
    traffic leaves by (None: those of the default routes): replies come back in through them, so they
    need forwarding; a private network a policy excepts is reached only through a listed interface.
    `protect_lans`: the networks the host is directly connected to (its LANs, whatever their
    addresses: public ones too) are protected like the private ranges.
    `host_netns` is the namespace that plays the host (None: the server's own; the tests use one of
    their own, so the machine itself is never changed).
    """

    pool: IPv4Network | None = None
    prefix: str | None = None
    upstream_dns: tuple[str, int] | None = None
    protected: tuple[IPNetwork, ...] = PRIVATE_NETWORKS
    uplinks: tuple[str, ...] | None = None
    protect_lans: bool = True
    host_netns: str | None = None
    remember_in: Path | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """One sandbox's link: its host end, its address and its gateway (which is also its nameserver)."""

    sandbox_id: str
    interface: str
    address: IPv4Address
    gateway: IPv4Address
    netns: str | None = None  # None for a link adopted by `sweep`

    @property
    def nameserver(self) -> str:
        """What the sandbox's resolv.conf names: its resolver listens on the gateway, port 53."""
        return str(self.gateway)


@dataclass
class _Host:
    addresses: list[IPv4Address] = field(default_factory=list)
    routes: list[tuple[IPv4Network, str]] = field(default_factory=list)  # (destination, device)
    connected: list[IPv4Network] = field(default_factory=list)  # the host's on-link networks (LANs)
    default_devices: list[str] = field(default_factory=list)


class HostNetwork:
    """The server's sandbox networks; see the module docstring. Create with `HostNetwork.start`."""

    def __init__(
        self,
        config: HostNetworkConfig,
        protected: tuple[IPNetwork, ...],
        uplinks: tuple[str, ...],
        claim: Claim,
    ):
        """Use `HostNetwork.start`, which checks the machine, claims a layout and installs the table."""
        self.config = config
        self.prefix = claim.prefix
        """The host ends' and the nft table's prefix (the one given, or the slot claimed)."""
        self.pool = claim.pool
        """The address pool (the one given, or the slot's)."""
        self._claim = claim
        self.protected = protected
        """What a sandbox may not reach unless excepted: `config.protected`, the pool, the host's
        addresses and (`protect_lans`) its on-link networks. Also the `protected` networks of a
        filtered sandbox's in-namespace rules."""
        self.uplinks = uplinks
        self.routed_uplinks: tuple[str, ...] = ()
        """The uplinks whose forwarding osbox turns on (the host is not a router): nothing but replies
        to sandboxes is routed in from them."""
        self.upstream_dns = config.upstream_dns or _resolv_conf_nameserver()
        self.attachments: dict[str, Attachment] = {}
        self._exceptions: dict[str, tuple[IPNetwork, ...]] = {}
        self._blocks: dict[int, str] = {}  # block index -> sandbox id
        self._forwarding_restore: dict[str, str] = {}  # uplink -> the value it gets back at close
        self._nft = NftSession(config.host_netns)
        self._lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    async def start(cls, config: HostNetworkConfig | None = None) -> HostNetwork:
        """Check the machine, (re)create the server's nft table (empty of sandboxes, atomically) and
        turn on forwarding on the uplinks. Links left by a previous run stay, isolated (their traffic
        matches no element), until `sweep`.

        Raises `NetworkUnavailable` (not root, `ip`/`nft` missing, a pool overlapping the host's routes)
        and `ValueError` for a malformed config.
        """
        config = config or HostNetworkConfig()
        _check_config(config)
        reason = _missing_capability()
        if reason is not None:
            raise NetworkUnavailable(f"no network: {reason}")
        claim = await asyncio.to_thread(_claim, config)
        try:
            network = await cls._start(config, claim)
        except BaseException:
            claim.release()
            raise
        _remember(config, claim.prefix)
        return network

    @classmethod
    async def _start(cls, config: HostNetworkConfig, claim: Claim) -> HostNetwork:
        prefix, pool = claim.prefix, claim.pool
        host = await _read_host(config.host_netns)
        ours = f"{prefix}-"
        clashes = [str(d) for d, dev in host.routes if d.overlaps(pool) and not dev.startswith(ours)]
        if clashes:
            raise NetworkUnavailable(
                f"no network: the sandbox pool {pool} overlaps this host's route(s) to "
                f"{', '.join(clashes)}; choose another pool"
            )
        host_addresses = [ipaddress.ip_network(a) for a in host.addresses if a not in pool]
        lans = [n for n in host.connected if not n.overlaps(pool)] if config.protect_lans else []
        protected = (*config.protected, pool, *host_addresses, *lans)
        uplinks = config.uplinks if config.uplinks is not None else tuple(dict.fromkeys(host.default_devices))
        network = cls(config, protected, uplinks, claim)
        if await network._sysctl("ipv4/conf/all/forwarding") != "1":
            network.routed_uplinks = uplinks
        try:
            # The table first: it routes nothing else in from an uplink by the time forwarding is on.
            table = render_host_table(prefix, pool, protected, uplinks=network.routed_uplinks)
            await network._nft.run(table)
            await network._forward_uplinks()
        except BaseException:
            with contextlib.suppress(Exception):
                await network._nft.run(render_table_removal(prefix))
            await network._restore_uplinks()
            await network._nft.close()
            raise
        return network

    async def close(self) -> None:
        """Remove every sandbox link, the server's nft table, and restore the uplinks' forwarding.

        Links go too: without the table they would be unisolated. A server that restarts attaches its
        live sandboxes again (same addresses: see the module docstring)."""
        async with self._lock:
            try:
                for sandbox_id in list(self.attachments):
                    await self._detach(sandbox_id)
                await self._nft.run(render_table_removal(self.prefix))
            finally:
                if await asyncio.to_thread(self._claim.others_alive):
                    self._forwarding_restore.clear()  # another server's sandboxes still need it
                await self._restore_uplinks()
                await self._nft.close()
                self._claim.release()

    # -- sandboxes ----------------------------------------------------------------------------------

    def interface_name(self, sandbox_id: str) -> str:
        """The host end's name for `sandbox_id`: `<prefix>-<hex of its hash>`, 15 characters."""
        digits = _IFNAMSIZ - len(self.prefix) - 1
        return f"{self.prefix}-{hashlib.sha256(sandbox_id.encode()).hexdigest()[:digits]}"

    @property
    def socket_factory(self) -> SocketFactory:
        """Sockets in the host's namespace (for the resolvers listening on host ends)."""
        netns = self.config.host_netns
        return netns_socket_factory(netns) if netns is not None else socket.socket

    async def attach(
        self,
        sandbox_id: str,
        netns: str,
        *,
        interface: str | None = None,
        address: IPv4Address | None = None,
        loopback: bool = True,
    ) -> Attachment:
        """Give the sandbox whose network namespace is at `netns` (e.g. `/proc/<pid>/ns/net`) its link.

        `interface` and `address` (what a sandbox had before a restart, see `rekey`) are kept where
        they are free; by default both follow from the sandbox id. `loopback`: bring the namespace's
        `lo` up too (False: its maker does, as bwrap does while the link is made beside its start; an
        `lo` already up would make bwrap's own "add 127.0.0.1" fail).
        Raises `ValueError` when it is attached already, `NetworkUnavailable` when the pool is full,
        `RuntimeError` with the tool's message when a step fails; nothing is left behind then.
        """
        async with self._lock:
            if sandbox_id in self.attachments:
                raise ValueError(f"sandbox {sandbox_id} is attached already")
            if interface is None or not self._ours(interface):
                interface = self.interface_name(sandbox_id)
            if any(a.interface == interface for a in self.attachments.values()):
                raise ValueError(
                    f"sandbox {sandbox_id}: its interface name {interface} is taken (hash clash)"
                )
            block = self._lease(sandbox_id, self._block_of(address))
            gateway, address = _block_addresses(self.pool, block)
            attachment = Attachment(sandbox_id, interface, address, gateway, netns)
            try:
                # The peer is created in the sandbox's namespace directly, as eth0: no name clash on the
                # host. When this fails (a link of that name exists), nothing of ours is to be undone.
                await _link_step(
                    self.config.host_netns, "link add", lambda rtnl: _add_veth(rtnl, interface, netns)
                )
            except BaseException:
                del self._blocks[block]
                raise
            try:
                await self._configure_link(attachment, netns, loopback)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._remove_link(attachment, ())
                del self._blocks[block]
                raise
            self.attachments[sandbox_id] = attachment
            return attachment

    def rekey(self, old_id: str, new_id: str) -> Attachment:
        """Hand the link attached for `old_id` (a pre-started sandbox of the warm pool) to `new_id`,
        its owner: same interface, addresses, elements and lease. Raises `KeyError` when `old_id` has
        no link, `ValueError` when `new_id` has one."""
        if new_id in self.attachments:
            raise ValueError(f"sandbox {new_id} is attached already")
        attachment = self.attachments.pop(old_id)
        moved = dataclasses.replace(attachment, sandbox_id=new_id)
        self.attachments[new_id] = moved
        if old_id in self._exceptions:
            self._exceptions[new_id] = self._exceptions.pop(old_id)
        self._blocks = {b: new_id if i == old_id else i for b, i in self._blocks.items()}
        return moved

    async def detach(self, sandbox_id: str) -> None:
        """Remove the sandbox's link (both veth ends), its nft elements and its address lease; no-op for
        a sandbox not attached."""
        async with self._lock:
            await self._detach(sandbox_id)

    async def drop_stale_link(self, sandbox_id: str, interface: str | None = None) -> None:
        """Remove the host end of `sandbox_id` (`interface`, default: the one named for it) if one is
        left from a previous run (a re-adopted sandbox is attached afresh, at the same addresses);
        no-op when it is attached here."""
        async with self._lock:
            if sandbox_id not in self.attachments:
                names = {self.interface_name(sandbox_id)}
                if interface is not None and self._ours(interface):
                    names.add(interface)
                taken = {a.interface for a in self.attachments.values()}
                for name in sorted(names - taken):
                    await _delete_link(self.config.host_netns, name)

    async def set_exceptions(self, sandbox_id: str, networks: Iterable[IPNetwork]) -> None:
        """Let the sandbox reach these networks although protected (its policy's IP/CIDR allow rules);
        replaces the previous ones. Never the host itself nor another sandbox."""
        async with self._lock:
            attachment = self.attachments[sandbox_id]
            new = tuple(n for n in networks if n.version == 4)
            old = self._exceptions.get(sandbox_id, ())
            script = render_exceptions(self.prefix, attachment.interface, old, new)
            if script:
                await self._nft.run(script)
            self._exceptions[sandbox_id] = new

    async def sweep(self, live_ids: Iterable[str]) -> dict[str, Attachment]:
        """Remove the links of sandboxes not in `live_ids` (left by a crash, or attached here and gone
        since), and adopt those of live ones (their elements registered again): the adopted, by id."""
        live_set = set(live_ids)
        live = {self.interface_name(i): i for i in live_set}
        async with self._lock:
            for sandbox_id in [i for i in self.attachments if i not in live_set]:
                await self._detach(sandbox_id)
            attached = {a.interface for a in self.attachments.values()}
            adopted: dict[str, Attachment] = {}
            for interface, addresses in (await _prefixed_links(self.config.host_netns, self.prefix)).items():
                owner = live.get(interface)
                if interface in attached:
                    continue  # attached by this run (a re-adopted sandbox, whatever its link's name)
                found = self._adoptable(interface, addresses)
                if owner is None or found is None:
                    await _delete_link(self.config.host_netns, interface)
                    continue
                block, gateway, address = found
                attachment = Attachment(owner, interface, address, gateway)
                self._blocks[block] = owner
                await self._nft.run(render_link(self.prefix, interface, address, gateway))
                self.attachments[owner] = adopted[owner] = attachment
            return adopted

    # -- internals ----------------------------------------------------------------------------------

    def _ours(self, interface: str) -> bool:
        return interface.startswith(f"{self.prefix}-") and len(interface) <= _IFNAMSIZ

    def _block_of(self, address: IPv4Address | None) -> int | None:
        """The pool block whose sandbox address is `address` (None: not one of the pool's)."""
        if address is None or address not in self.pool:
            return None
        block = (int(address) - int(self.pool.network_address)) >> (32 - _BLOCK)
        return block if _block_addresses(self.pool, block)[1] == address else None

    def _lease(self, sandbox_id: str, wanted: int | None = None) -> int:
        count = 1 << (_BLOCK - self.pool.prefixlen)
        if wanted is not None and wanted not in self._blocks:
            self._blocks[wanted] = sandbox_id
            return wanted
        start = int.from_bytes(hashlib.sha256(sandbox_id.encode()).digest()[:8]) % count
        for step in range(count):
            block = (start + step) % count
            if block not in self._blocks:
                self._blocks[block] = sandbox_id
                return block
        raise NetworkUnavailable(f"no network: the sandbox pool {self.pool} is full ({count} sandboxes)")

    def _adoptable(
        self, interface: str, addresses: list[IPv4Address]
    ) -> tuple[int, IPv4Address, IPv4Address] | None:
        for gateway in addresses:
            if gateway in self.pool:
                block = (int(gateway) - int(self.pool.network_address)) >> (32 - _BLOCK)
                expected_gateway, address = _block_addresses(self.pool, block)
                if gateway == expected_gateway and block not in self._blocks:
                    return block, gateway, address
        _log.warning("removing %s: its address is not a free block of the pool", interface)
        return None

    async def _configure_link(self, attachment: Attachment, netns: str, loopback: bool) -> None:
        """Both ends at once (each side's steps in order): a create waits for the slower, not the sum."""
        await all_of(
            [self._configure_host_end(attachment), _configure_sandbox_end(attachment, netns, loopback)]
        )

    async def _configure_host_end(self, attachment: Attachment) -> None:
        name = attachment.interface

        def configure(rtnl: Rtnl) -> None:
            # No IPv6 on the host end (no link-local address a sandbox could reach), so before it is up;
            # forwarding for it only.
            _write_sysctl(f"ipv6/conf/{name}/disable_ipv6", "1")
            _write_sysctl(f"ipv4/conf/{name}/forwarding", "1")
            rtnl.add_address(name, attachment.gateway, _BLOCK)
            rtnl.set_up(name)

        await self._nft.run(render_link(self.prefix, name, attachment.address, attachment.gateway))
        await _link_step(self.config.host_netns, "host end", configure)

    async def _detach(self, sandbox_id: str) -> None:
        attachment = self.attachments.pop(sandbox_id, None)
        if attachment is None:
            return
        exceptions = self._exceptions.pop(sandbox_id, ())
        try:
            await self._remove_link(attachment, exceptions)
        finally:
            self._blocks = {b: i for b, i in self._blocks.items() if i != sandbox_id}

    async def _remove_link(self, attachment: Attachment, exceptions: Sequence[IPNetwork]) -> None:
        # Deleting the host end deletes its peer (wherever it is) and the host end's addresses and route.
        await _delete_link(self.config.host_netns, attachment.interface)
        await self._nft.run(
            render_unlink(
                self.prefix, attachment.interface, attachment.address, attachment.gateway, exceptions
            )
        )

    async def _sysctl(self, key: str, value: str | None = None) -> str:
        """Read (or write) `/proc/sys/net/<key>` in the host's namespace."""
        if value is None:
            return await asyncio.to_thread(call_in_netns, self.config.host_netns, lambda: _read_sysctl(key))
        await asyncio.to_thread(call_in_netns, self.config.host_netns, lambda: _write_sysctl(key, value))
        return value

    async def _forward_uplinks(self) -> None:
        """Turn on forwarding on the uplinks of a host that is not a router (`all.forwarding` 0); each
        goes back to that global value at `close`. Also after a crash, which left them on."""
        host_default = await self._sysctl("ipv4/conf/all/forwarding")
        for uplink in self.routed_uplinks:
            key = f"ipv4/conf/{uplink}/forwarding"
            if await self._sysctl(key) != "1":
                await self._sysctl(key, "1")
            self._forwarding_restore[uplink] = host_default

    async def _restore_uplinks(self) -> None:
        for uplink, before in list(self._forwarding_restore.items()):
            try:
                await self._sysctl(f"ipv4/conf/{uplink}/forwarding", before)
            except OSError as exc:  # the uplink went away meanwhile: nothing to restore
                _log.debug("cannot restore forwarding on %s: %s", uplink, exc)
            del self._forwarding_restore[uplink]


async def _configure_sandbox_end(attachment: Attachment, netns: str, loopback: bool) -> None:
    def configure(rtnl: Rtnl) -> None:
        if loopback:
            rtnl.set_up("lo")
        rtnl.add_address("eth0", attachment.address, _BLOCK)
        rtnl.set_up("eth0")
        rtnl.add_default_route(attachment.gateway, "eth0")

    await _link_step(netns, "sandbox end", configure)


def _add_veth(rtnl: Rtnl, interface: str, netns: str) -> None:
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        rtnl.add_veth(interface, "eth0", fd)
    finally:
        os.close(fd)


async def _link_step(netns: str | None, what: str, work: Callable[[Rtnl], None]) -> None:
    """`work` on an rtnetlink socket inside the namespace at path `netns` (None: the server's own), in
    a thread; `RuntimeError` ("ip: …", the kernel's words) when a step fails."""

    def run() -> None:
        with Rtnl() as rtnl:
            work(rtnl)

    try:
        await asyncio.to_thread(call_in_netns, netns, run)
    except OSError as exc:
        raise RuntimeError(f"ip: {what}: {exc.strerror or exc}") from None


async def _delete_link(netns: str | None, interface: str) -> None:
    """Delete `interface` in `netns` if it is there (a veth's peer goes with it); failures are logged."""

    def delete(rtnl: Rtnl) -> None:
        rtnl.delete_link(interface)

    try:
        await _link_step(netns, f"link del {interface}", delete)
    except RuntimeError as exc:
        _log.warning("%s", exc)


def _check_config(config: HostNetworkConfig) -> None:
    if config.prefix is not None and not _PREFIX.fullmatch(config.prefix):
        raise ValueError(f"network prefix {config.prefix!r}: 2-6 lowercase letters/digits, a letter first")
    if config.pool is not None and (
        not isinstance(config.pool, IPv4Network) or config.pool.prefixlen > _BLOCK
    ):
        raise ValueError(f"sandbox pool {config.pool}: an IPv4 network of /{_BLOCK} or larger")


def _claim(config: HostNetworkConfig) -> Claim:
    """The layout this server is to use, claimed host-wide (see `hostslots`)."""
    preferred = None
    if config.remember_in is not None:
        with contextlib.suppress(OSError):
            preferred = config.remember_in.read_text().strip() or None
    try:
        return claim_layout(
            config.prefix,
            config.pool,
            preferred=preferred,
            netns=config.host_netns,
            owner=f"pid {os.getpid()}" + (f", {config.remember_in.parent}" if config.remember_in else ""),
        )
    except LayoutTaken as exc:
        raise NetworkUnavailable(f"no network: {exc}") from None


def _remember(config: HostNetworkConfig, prefix: str) -> None:
    """Keep the claimed prefix where the next start of this server looks first (its leftovers)."""
    if config.remember_in is not None:
        try:
            config.remember_in.write_text(f"{prefix}\n")
        except OSError as exc:
            _log.warning("cannot remember the network prefix in %s: %s", config.remember_in, exc)


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return (
            "sandbox networking needs root (CAP_NET_ADMIN for veths and nftables) and the server runs "
            f"as uid {os.geteuid()} (a server that is not root uses pasta: egress/pasta.py)"
        )
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def _block_addresses(pool: IPv4Network, block: int) -> tuple[IPv4Address, IPv4Address]:
    """(host end, sandbox) of the pool's `block`th /30."""
    base = int(pool.network_address) + (block << (32 - _BLOCK))
    return IPv4Address(base + 1), IPv4Address(base + 2)


def _read_sysctl(key: str) -> str:
    with open(f"/proc/sys/net/{key}") as f:
        return f.read().strip()


def _write_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/net/{key}", "w") as f:
        f.write(value)


def _resolv_conf_nameserver(path: str = "/etc/resolv.conf") -> tuple[str, int] | None:
    with contextlib.suppress(OSError), open(path) as conf:
        for line in conf:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                return fields[1], 53
    return None


async def _run(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(_COMMAND_TIMEOUT):
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{argv[0]} did not finish within {_COMMAND_TIMEOUT:g} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _in(netns: str | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["nsenter", f"--net={netns}", "--", *argv]


async def _ip_json(netns: str | None, *args: str) -> list[dict[str, Any]]:
    code, out, err = await _run(_in(netns, ["ip", "-j", *args]))
    if code != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {err.strip()}")
    parsed: list[dict[str, Any]] = json.loads(out or "[]")
    return parsed


async def _read_host(netns: str | None) -> _Host:
    host = _Host()
    for link in await _ip_json(netns, "-4", "addr", "show"):
        host.addresses += [IPv4Address(a["local"]) for a in link.get("addr_info", []) if "local" in a]
    for route in await _ip_json(netns, "-4", "route", "show", "table", "all"):
        dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
        if dst == "default":
            if route.get("table") in (None, "main"):
                host.default_devices.append(dev)
            continue
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(dst, strict=False)
            if isinstance(network, IPv4Network) and route.get("type") in (None, "unicast"):
                host.routes.append((network, dev))
                if route.get("scope") == "link" and route.get("table") in (None, "main"):
                    host.connected.append(network)
    return host


async def _prefixed_links(netns: str | None, prefix: str) -> dict[str, list[IPv4Address]]:
    """The host's interfaces named `<prefix>-…`, with their IPv4 addresses."""
    found: dict[str, list[IPv4Address]] = {}
    for link in await _ip_json(netns, "addr", "show"):
        name = link.get("ifname", "")
        if name.startswith(f"{prefix}-"):
            found[name] = [
                IPv4Address(a["local"]) for a in link.get("addr_info", []) if a.get("family") == "inet"
            ]
    return found
