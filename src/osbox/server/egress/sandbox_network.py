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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .enforcer import probe_enforcement
from .engine import Denial, EgressUnavailable, SandboxEgress
from .hostnet import Attachment, HostNetwork, NetworkUnavailable
from .nft import render_dns_redirect, render_removal
from .nft_runner import NftError, run_nft
from .pasta import ROOTLESS_POLICY, PastaNetwork
from .policy import Policy
from .resolver import PolicyResolver, ResolvedAddress

__all__ = ["NetworkMode", "SandboxNetwork", "connect_sandbox"]

NetworkMode = Literal["none", "open", "filtered"]


@dataclass
class SandboxNetwork:
    """What `connect_sandbox` set up for one sandbox; `close` undoes all of it."""

    mode: NetworkMode
    host: HostNetwork | PastaNetwork | None = None
    attachment: Attachment | None = None
    egress: SandboxEgress | None = None
    resolver: PolicyResolver | None = None
    redirected: str | None = None  # the namespace whose DNS redirect (mode `open`) is to be removed

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
            if self.redirected is not None:
                with contextlib.suppress(NftError):  # the namespace is gone already: so is the table
                    await run_nft(self.redirected, render_removal())
        finally:
            if self.host is not None and self.attachment is not None:
                await self.host.detach(self.attachment.sandbox_id)
            self.egress = self.resolver = self.attachment = None
            self.redirected = None


async def connect_sandbox(
    host: HostNetwork | PastaNetwork | None,
    sandbox_id: str,
    netns: str,
    mode: NetworkMode,
    *,
    policy: Policy | None = None,
    on_denied: Callable[[Denial], None] | None = None,
) -> SandboxNetwork:
    """Set up the network of the sandbox whose namespace is at `netns`, in `mode` (see the module
    docstring); `policy` (default: allow all) and `on_denied` for `filtered`.

    Raises `NetworkUnavailable` when the mode needs a network and there is none (`host` None: the
    server could not start one, e.g. not root) or no upstream DNS is known, `EgressUnavailable` when the
    policy cannot be enforced; nothing is left behind either way.
    """
    if mode == "none":
        return SandboxNetwork("none")
    if host is None:
        raise NetworkUnavailable(f"network mode {mode!r}: this server has no sandbox network")
    if host.upstream_dns is None:
        raise NetworkUnavailable("no network: no upstream DNS server (no nameserver in /etc/resolv.conf)")
    if isinstance(host, PastaNetwork):  # rootless: a pasta and a table isolating it (pasta.py)
        if mode != "open":
            raise EgressUnavailable(ROOTLESS_POLICY)
        return SandboxNetwork(mode, host, await host.attach(sandbox_id, netns))
    attachment = await host.attach(sandbox_id, netns)
    network = SandboxNetwork(mode, host, attachment)
    listen = (attachment.nameserver, 53)
    try:
        if mode == "open":
            network.resolver = PolicyResolver(
                Policy.allow_all,
                host.upstream_dns,
                on_allowed=_admit_nothing,
                socket_factory=host.socket_factory,
            )
            await network.resolver.start(*listen)
            if (await probe_enforcement(netns)).mode == "dns+nft":
                await run_nft(netns, render_dns_redirect(listen))
                network.redirected = netns
        else:
            network.egress = SandboxEgress(
                netns,
                listen=listen,
                upstream=host.upstream_dns,
                on_denied=on_denied,
                socket_factory=host.socket_factory,
                protected=host.protected,
            )
            chosen = policy or Policy.allow_all()
            await network.egress.start(chosen)
            await host.set_exceptions(sandbox_id, chosen.networks("allow", 4))
    except BaseException:
        await network.close()
        raise
    return network


async def _admit_nothing(name: str, addresses: Sequence[ResolvedAddress]) -> None:
    """Open mode has no allow sets: every answer goes back as it is."""
    del name, addresses
