"""One sandbox's network in its mode: `none`, `open` or `filtered`, set up and torn down by one call each.

* `none`: no link; the namespace has its own loopback only (what bwrap's `--unshare-net` gives).
* `open`: a link from `HostNetwork.attach` (NAT, isolation) and a resolver on the link's gateway that
  answers everything (a plain forwarder to the host's upstream): the sandbox's resolv.conf names
  `nameserver`, and where nftables works, DNS to any other address is redirected there too (a
  namespace table holding only that redirect), so a resolv.conf naming another server still works.
* `filtered`: `open` plus the engine (`SandboxEgress`): the policy in the namespace's own nft table, DNS
  from any address redirected to the policy resolver on the gateway, the host's protected networks
  refused there too (with events), and the policy's IP/CIDR allow rules excepted on the host side.

Example::

    network = await connect_sandbox(host, "sbx-1", "/proc/4242/ns/net", "filtered", policy=policy)
    write_resolv_conf(network.nameserver)
    ...
    await network.close()

A pre-started sandbox of the warm pool gets its link ahead (`prepare_sandbox`): the veth and its
addresses, the host's elements, and the namespace's nft table refusing everything (a filtered sandbox's
ruleset for a deny-all policy), its nft session running. The create that claims it
(`connect_sandbox(..., prepared=...)`) only puts its mode in force: its policy (for one that denies by
default, just its sets filled) and its resolver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from .enforcer import probe_enforcement
from .engine import Denial, EgressUnavailable, SandboxEgress
from .hostnet import Attachment, HostNetwork, NetworkUnavailable
from .nft import render_dns_redirect, render_removal, render_ruleset
from .nft_runner import NftError, NftSession
from .pasta import ROOTLESS_POLICY, PastaNetwork
from .policy import Policy
from .resolver import PolicyResolver, ResolvedAddress
from .steps import all_of

__all__ = ["NetworkMode", "PreparedNetwork", "SandboxNetwork", "connect_sandbox", "prepare_sandbox"]

NetworkMode = Literal["none", "open", "filtered"]


@dataclass
class SandboxNetwork:
    """What `connect_sandbox` set up for one sandbox; `close` undoes all of it."""

    mode: NetworkMode
    host: HostNetwork | PastaNetwork | None = None
    attachment: Attachment | None = None
    egress: SandboxEgress | None = None
    resolver: PolicyResolver | None = None
    nft: NftSession | None = None  # mode `open`: the session that holds the namespace's DNS redirect

    @property
    def nameserver(self) -> str | None:
        """The address for the sandbox's resolv.conf (None in mode `none`)."""
        return self.attachment.nameserver if self.attachment is not None else None

    async def replace_policy(self, policy: Policy) -> None:
        """Put `policy` in force (mode `filtered` only): the namespace's rules and the host's exceptions."""
        if self.egress is None or self.host is None or self.attachment is None:
            raise NetworkUnavailable(f"no egress policy in network mode {self.mode!r}")
        await self.egress.replace(policy)
        await self.host.set_exceptions(self.attachment.sandbox_id, policy.networks("allow", 4))

    async def close(self) -> None:
        """Stop the resolver (and the engine), then remove the link. Safe to call twice."""
        try:
            if self.egress is not None:
                await self.egress.close()
            if self.resolver is not None:
                await self.resolver.close()
            if self.nft is not None:
                try:
                    with contextlib.suppress(NftError):  # the namespace is gone already: so is the table
                        await self.nft.run(render_removal())
                finally:
                    await self.nft.close()
        finally:
            if self.host is not None and self.attachment is not None:
                await self.host.detach(self.attachment.sandbox_id)
            self.egress = self.resolver = self.attachment = None
            self.nft = None


@dataclass
class PreparedNetwork:
    """A link made ahead for a pre-started sandbox (`prepare_sandbox`): its namespace refuses everything
    until `connect_sandbox` puts a mode in force; `close` undoes it (a pool sandbox discarded)."""

    host: HostNetwork
    attachment: Attachment
    nft: NftSession

    async def close(self) -> None:
        """Remove the link, then the namespace's table (which refuses everything meanwhile), and end
        the nft session."""
        try:
            await self.host.detach(self.attachment.sandbox_id)
        finally:
            try:
                with contextlib.suppress(NftError):  # the namespace is gone already: so is the table
                    await self.nft.run(render_removal())
            finally:
                await self.nft.close()


async def prepare_sandbox(host: HostNetwork, sandbox_id: str, netns: str) -> PreparedNetwork:
    """The link of a sandbox whose mode is not known yet, its namespace's table refusing everything
    (and its nft session started), both made at once. Nothing is left behind on failure."""
    nft = NftSession(netns)
    try:
        attachment = await host.attach(sandbox_id, netns)
        # The ruleset of a filtered sandbox denying everything, on its resolver's address: a create
        # with a policy denying by default then only fills its sets (see `NftEnforcer`).
        await nft.run(render_ruleset(Policy.deny_all(), _listen(attachment), protected=host.protected))
    except BaseException:  # also cancelled (the pool closing)
        await nft.close()
        await host.detach(sandbox_id)
        raise
    return PreparedNetwork(host, attachment, nft)


def _listen(attachment: Attachment) -> tuple[str, int]:
    """Where the sandbox's resolver listens (the DNS DNAT target): its gateway, port 53."""
    return attachment.nameserver, 53


async def connect_sandbox(
    host: HostNetwork | PastaNetwork | None,
    sandbox_id: str,
    netns: str,
    mode: NetworkMode,
    *,
    policy: Policy | None = None,
    on_denied: Callable[[Denial], None] | None = None,
    prepared: PreparedNetwork | None = None,
    interface: str | None = None,
    address: IPv4Address | None = None,
    loopback: bool = True,
) -> SandboxNetwork:
    """Set up the network of the sandbox whose namespace is at `netns`, in `mode` (see the module
    docstring); `policy` (default: allow all) and `on_denied` for `filtered`. `prepared`: the link made
    ahead for it (`prepare_sandbox`), which it takes over (and removes in mode `none`); otherwise a new
    one, keeping `interface` and `address` where they are free (a re-adopted sandbox's), and bringing
    the namespace's loopback up unless `loopback` is False (see `HostNetwork.attach`).

    Raises `NetworkUnavailable` when the mode needs a network and there is none (`host` None: the
    server could not start one, e.g. not root) or no upstream DNS is known, `EgressUnavailable` when the
    policy cannot be enforced; nothing is left behind either way (`prepared` included).
    """
    if mode == "none" or host is None or host.upstream_dns is None:
        if prepared is not None:
            await prepared.close()
        if mode == "none":
            return SandboxNetwork("none")
        if host is None:
            raise NetworkUnavailable(f"network mode {mode!r}: this server has no sandbox network")
        raise NetworkUnavailable("no network: no upstream DNS server (no nameserver in /etc/resolv.conf)")
    if isinstance(host, PastaNetwork):  # rootless: a pasta and a table isolating it (pasta.py)
        if prepared is not None:
            await prepared.close()
        if mode != "open":
            raise EgressUnavailable(ROOTLESS_POLICY)
        return SandboxNetwork(mode, host, await host.attach(sandbox_id, netns))
    upstream = host.upstream_dns
    if prepared is not None:
        attachment, nft = host.rekey(prepared.attachment.sandbox_id, sandbox_id), prepared.nft
    else:
        attachment = await host.attach(
            sandbox_id, netns, interface=interface, address=address, loopback=loopback
        )
        nft = None
    network = SandboxNetwork(mode, host, attachment)
    listen = _listen(attachment)
    try:
        if mode == "open":
            network.nft = nft
            network.resolver = PolicyResolver(
                Policy.allow_all, upstream, on_allowed=_admit_nothing, socket_factory=host.socket_factory
            )
            steps: list[Awaitable[object]] = [network.resolver.start(*listen)]
            if (await probe_enforcement(netns)).mode == "dns+nft":
                network.nft = network.nft or NftSession(netns)
                steps.append(network.nft.run(render_dns_redirect(listen)))
            await all_of(steps)
        else:
            network.egress = SandboxEgress(
                netns,
                listen=listen,
                upstream=upstream,
                on_denied=on_denied,
                socket_factory=host.socket_factory,
                protected=host.protected,
                nft_session=nft,
                nft_installed="deny" if prepared is not None else None,
            )
            chosen = policy or Policy.allow_all()
            await all_of(
                [network.egress.start(chosen), host.set_exceptions(sandbox_id, chosen.networks("allow", 4))]
            )
    except BaseException:
        await network.close()
        raise
    return network


async def _admit_nothing(name: str, addresses: Sequence[ResolvedAddress]) -> None:
    """Open mode has no allow sets: every answer goes back as it is."""
    del name, addresses
