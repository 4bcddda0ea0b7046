"""nftables enforcement for one sandbox network namespace: apply, replace, admit, remove, and probe.

The ruleset comes from `nft.render_ruleset`; it is applied through an `NftSession` (libnftables in a
thread inside the namespace, or `nsenter --net=<netns> nft -f -`), so the namespace can be a named one
(`/run/netns/NAME`) or a process's (`/proc/PID/ns/net`). Every change is one nft transaction. The enforcer
remembers which addresses each allowed name admitted and until when, so a policy replacement keeps the
admissions of names that are still allowed (and drops the others at once).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .nft import (
    DOH_RESOLVERS,
    Admission,
    render_admissions,
    render_policy_update,
    render_removal,
    render_ruleset,
)
from .nft_runner import NftError, NftSession, run_nft
from .policy import Action, IPAddress, IPNetwork, Policy
from .resolver import ResolvedAddress

__all__ = [
    "ADMISSION_SLACK",
    "Enforcement",
    "EnforcementMode",
    "NftEnforcer",
    "NftError",
    "probe_enforcement",
    "run_nft",
]

EnforcementMode = Literal["dns+nft", "dns", "none"]


@dataclass(frozen=True, slots=True)
class Enforcement:
    """How a policy is enforced, truthfully: `dns+nft`, `dns` (names only) or `none`, and why not more."""

    mode: EnforcementMode
    reason: str | None = None


async def probe_enforcement(netns: str | None) -> Enforcement:
    """What this machine can enforce in `netns`.

    `dns` when nftables is missing, not permitted or refuses osbox's ruleset (names are still filtered
    by the resolver, literal IPs are not); `none` when there is no network namespace to enforce in. The
    machine's side (tools, root, the ruleset in nft's check mode) is probed once per process: it does not
    change from one sandbox to the next, and a sandbox create should not pay an nft run for it.
    """
    if netns is not None and not _netns_exists(netns):
        return Enforcement("none", f"no network namespace at {netns}")
    global _machine_enforcement
    if _machine_enforcement is None:
        _machine_enforcement = await _probe_machine()
    return _machine_enforcement


_machine_enforcement: Enforcement | None = None


async def _probe_machine() -> Enforcement:
    if shutil.which("nft") is None:
        return Enforcement("dns", "nftables is not installed (apt-get install nftables)")
    if shutil.which("nsenter") is None:
        return Enforcement("dns", "nsenter is not installed (util-linux)")
    if os.geteuid() != 0:
        return Enforcement("dns", "nftables rules need root (CAP_NET_ADMIN); the server is not root")
    try:
        await run_nft(None, render_ruleset(Policy.deny_all(), ("127.0.0.1", 53)), check_only=True)
    except NftError as exc:
        return Enforcement("dns", f"nft refused the ruleset: {exc}")
    return Enforcement("dns+nft")


ADMISSION_SLACK = 60
"""Seconds an address stays admitted beyond its (clamped) TTL; see `NftEnforcer.admit`."""


@dataclass
class _Admitted:
    expires: float  # on the monotonic clock
    names: set[str] = field(default_factory=set)


class NftEnforcer:
    """The nftables side of one sandbox's policy.

    Usage::

        enforcer = NftEnforcer("/run/netns/sbx-1", resolver_address)
        await enforcer.apply(policy)            # at create, and on every policy change
        resolver = PolicyResolver(lambda: enforcer.policy, upstream, on_allowed=enforcer.admit)
        ...
        await enforcer.remove()
    """

    def __init__(
        self,
        netns: str | None,
        resolver: tuple[str, int],
        *,
        doh_resolvers: Sequence[IPNetwork] = DOH_RESOLVERS,
        protected: Sequence[IPNetwork] = (),
        clock: Callable[[], float] = time.monotonic,
        session: NftSession | None = None,
        installed: Action | None = None,
    ) -> None:
        """`netns` is the namespace's path (None: the caller's own); `resolver` where DNS is sent;
        `protected` networks are refused unless the policy allows them by IP/CIDR (see `render_ruleset`);
        `session` an nft session in `netns` already running (the enforcer owns it from now on), and
        `installed` the `defaultAction` of the ruleset it holds already (rendered with these same
        arguments), which a policy of that default then only needs its sets changed for."""
        self.netns = netns
        self.resolver = resolver
        self._doh = doh_resolvers
        self._protected = protected
        self._clock = clock
        self._lock = asyncio.Lock()
        self._admitted: dict[IPAddress, _Admitted] = {}
        self._nft = session or NftSession(netns)
        self._installed = installed  # the default action of the table in the namespace, if ours is there
        self.policy: Policy = Policy.allow_all()

    async def apply(self, policy: Policy) -> None:
        """Install `policy` (replacing any previous one, atomically). Addresses admitted for names the new
        policy still allows stay admitted for the rest of their time; the others are out at once."""
        async with self._lock:
            now = self._clock()
            kept: list[Admission] = []
            for address, entry in list(self._admitted.items()):
                entry.names = {n for n in entry.names if policy.decide(n) == "allow"}
                remaining = int(entry.expires - now)
                if not entry.names or remaining < 1:
                    del self._admitted[address]
                    continue
                kept.append(Admission(address, remaining))
            if self._installed == policy.default_action:
                script = render_policy_update(policy, admitted=kept)  # same chains: only the sets change
            else:
                script = render_ruleset(
                    policy, self.resolver, admitted=kept, doh_resolvers=self._doh, protected=self._protected
                )
            self._installed = None  # unknown should the transaction fail midway (it is all or nothing)
            await self._nft.run(script)
            self._installed = policy.default_action
            self.policy = policy

    async def admit(self, name: str, addresses: Sequence[ResolvedAddress]) -> None:
        """Admit an allowed name's addresses for their TTL (the resolver's `on_allowed` hook).

        An address is admitted for its TTL plus `ADMISSION_SLACK`, and nft is only called when an
        answer's TTL would outlast the current admission: a name looked up again and again costs one nft
        call per `ADMISSION_SLACK` seconds, not one per lookup. An admission is never shortened. A name
        the policy denies by now (changed while its query was upstream) admits nothing.
        """
        async with self._lock:
            if self.policy.decide(name) != "allow":
                return
            now = self._clock()
            changes: list[Admission] = []
            for item in addresses:
                entry = self._admitted.get(item.address)
                if entry is None or now + item.ttl > entry.expires:
                    changes.append(Admission(item.address, item.ttl + ADMISSION_SLACK))
            if changes:
                await self._nft.run(render_admissions(changes))
            # Recorded once nft has them, so the bookkeeping never claims more than the kernel holds.
            for item in addresses:
                entry = self._admitted.setdefault(item.address, _Admitted(expires=0.0))
                entry.names.add(name)
            for change in changes:
                self._admitted[change.address].expires = now + change.timeout

    async def remove(self) -> None:
        """Remove osbox's table from the namespace (no-op when it is gone already) and end the nft
        session, whose thread would otherwise keep the namespace alive. `apply` starts over."""
        async with self._lock:
            self._admitted.clear()
            self._installed = None
            try:
                if self._nft.active or self.netns is None or _netns_exists(self.netns):
                    await self._nft.run(render_removal())
            finally:
                await self._nft.close()

    async def release(self) -> None:
        """End the nft session (and its hold on the namespace) without touching the table."""
        await self._nft.close()


def _netns_exists(path: str) -> bool:
    # A stat of a nsfs/procfs file: no disk I/O, fine on the event loop.
    return os.path.exists(path)
