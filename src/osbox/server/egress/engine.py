"""One sandbox's egress, assembled: its policy, the policy resolver and the nftables enforcer.

The object a filtered sandbox's network owns (`sandbox_network.connect_sandbox`): start it with the
create request's policy, hand it to the egress app as its policy store, close it with the sandbox.

A policy that filters anything needs `dns+nft`: where the probe finds less (no nft, not root), `start`
and `replace` refuse it with `EgressUnavailable` and the reason, rather than run unfiltered.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from .denials import DenialThrottle
from .enforcer import Enforcement, NftEnforcer, probe_enforcement
from .netns import SocketFactory, netns_socket_factory
from .nflog import NflogListener, RefusedPacket
from .nft import DOH_RESOLVERS
from .nft_runner import NftSession
from .policy import Action, IPNetwork, Policy
from .resolver import PolicyResolver
from .steps import all_of

__all__ = ["Denial", "EgressUnavailable", "SandboxEgress"]

_log = logging.getLogger(__name__)


class EgressUnavailable(RuntimeError):
    """This machine cannot enforce the requested policy; the message says why (safe to show users)."""


@dataclass(frozen=True, slots=True)
class Denial:
    """A denied name or a refused connection, for the sandbox's diagnostics events.

    `kind` "dns": `target` is the name, `detail` the query type ("A"); "connection": `target` is
    `address:port` (or the address), `detail` the protocol ("tcp").
    """

    at: datetime
    target: str
    kind: Literal["dns", "connection"]
    detail: str


class SandboxEgress:
    """Policy + resolver + enforcer of one sandbox network namespace.

    Example::

        egress = SandboxEgress("/run/netns/sbx-1", listen=("100.64.0.1", 53), upstream=("10.0.0.2", 53))
        await egress.start(policy_from_create(request.get("networkPolicy")))
        ...
        await egress.close()
    """

    def __init__(
        self,
        netns: str | None,
        *,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        on_denied: Callable[[Denial], None] | None = None,
        denial_throttle: DenialThrottle | None = None,
        socket_factory: SocketFactory = socket.socket,
        doh_resolvers: Sequence[IPNetwork] = DOH_RESOLVERS,
        protected: Sequence[IPNetwork] = (),
        nft_session: NftSession | None = None,
        nft_installed: Action | None = None,
    ) -> None:
        """`listen` is where the resolver answers (the DNS DNAT target); `upstream` where it asks;
        `protected` networks (the host's addresses, other sandboxes) stay out of reach unless the policy
        allows them by IP/CIDR. `on_denied` gets the denials `denial_throttle` lets through (default: a
        name at most once per 10 s, 120 a minute). `nft_session`: one already running in `netns` (a
        pre-started sandbox's), which the engine owns from now on, holding osbox's ruleset for a policy
        of default `nft_installed` already (see `NftEnforcer`)."""
        self.netns = netns
        self._listen = listen
        self._on_denied = on_denied
        self._throttle = denial_throttle or DenialThrottle()
        self._refusals: NflogListener | None = None
        self._policy = Policy.allow_all()
        self.enforcement = Enforcement("none", "not started")
        # Public for inspection and tests; change the policy through `replace` only.
        self.enforcer = NftEnforcer(
            netns,
            listen,
            doh_resolvers=doh_resolvers,
            protected=protected,
            session=nft_session,
            installed=nft_installed,
        )
        self.resolver = PolicyResolver(
            lambda: self._policy,
            upstream,
            on_allowed=self.enforcer.admit,
            on_denied=self._record_denial,
            socket_factory=socket_factory,
        )

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    async def start(self, policy: Policy) -> None:
        """Probe what can be enforced, install `policy` and start the resolver.

        Raises `EgressUnavailable` for a filtering policy the machine cannot enforce with nftables, and
        `OSError` when the resolver cannot listen; either way nothing is left behind.
        """
        self.enforcement = await probe_enforcement(self.netns)
        # The resolver answers by `policy` from its first query on (none can come before the entrypoint
        # runs; should one, its admission waits for the rules in `NftEnforcer.admit`), so the rules, the
        # resolver and the refusal log are set up at once.
        self._policy = policy
        steps: list[Awaitable[object]] = [self.replace(policy), self.resolver.start(*self._listen)]
        if self.enforcement.mode == "dns+nft":
            steps.append(self._start_refusal_log())
        try:
            await all_of(steps)
        except BaseException:
            await self.close()  # nothing half-started stays behind (an nft table, a bound port)
            raise

    async def replace(self, policy: Policy) -> None:
        """Put `policy` in force at once (new connections and the next DNS query see it)."""
        if self.enforcement.mode == "dns+nft":
            await self.enforcer.apply(policy)
        elif policy != Policy.allow_all():
            raise EgressUnavailable(f"cannot enforce an egress policy here: {self.enforcement.reason}")
        self._policy = policy

    async def close(self) -> None:
        """Stop the resolver and the refusal log, and remove the nftables table."""
        if self._refusals is not None:
            self._refusals.close()
            self._refusals = None
        await self.resolver.close()
        if self.enforcement.mode == "dns+nft":
            await self.enforcer.remove()
        else:
            await self.enforcer.release()

    async def _start_refusal_log(self) -> None:
        factory = netns_socket_factory(self.netns) if self.netns is not None else socket.socket
        listener = NflogListener(factory, self._record_refusal)
        try:
            await listener.start()
        except OSError as exc:
            # Refusals still happen; only their events are missing, and the log says why.
            _log.warning("refused connections will not be recorded: NFLOG unavailable: %s", exc)
            return
        self._refusals = listener

    def _record_denial(self, name: str, query_type: str) -> None:
        self._record(name, "dns", query_type)

    def _record_refusal(self, packet: RefusedPacket) -> None:
        self._record(packet.target, "connection", packet.protocol)

    def _record(self, target: str, kind: Literal["dns", "connection"], detail: str) -> None:
        if self._on_denied is not None and self._throttle.admit(target, time.monotonic()):
            self._on_denied(Denial(datetime.now(UTC), target, kind, detail))
