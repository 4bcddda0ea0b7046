"""Every sandbox network of one server: which mode each sandbox gets, setting it up and tearing it down,
its policy kept across a restart, and the policy store the egress API works on.

Modes (see `sandbox_network`): `none`, `open`, `filtered`. Which one a sandbox gets:

* the server-wide switch (`ServerConfig.network`, `osbox serve --network`) is the mode of a sandbox
  created without a `networkPolicy`; `none` also means the host is left alone (no veth, no nft table);
* a create with a non-empty `networkPolicy` gets `filtered` with that policy;
* the extension `osbox.network` (`none`, `open` or `filtered`) chooses explicitly (a policy needs
  `filtered`).

`credentialProxy: {enabled: true}` at create also puts the sandbox behind the credential proxy
(`credential_proxy.py`): its vault's bindings are injected into its requests, and the proxy's CA goes
into its trust store (image sandboxes only: an image-less one shares the host's /etc).

A mode that needs a network on a server that has none (switched off, or not root) fails the create with
the reason, as does a policy the machine cannot enforce; it never runs unfiltered. Each networked
sandbox's mode and policy are kept in `<state dir>/network.json` (server-only), so a re-adopted sandbox
gets the same network and policy after a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, get_args

from .app import BindingsSink, PolicyStore
from .credential_proxy import CredentialProxy, ProxySettings, ProxyUnavailable
from .enforcer import Enforcement
from .engine import Denial, EgressUnavailable
from .hostnet import HostNetwork, HostNetworkConfig, NetworkUnavailable
from .pasta import ROOTLESS_POLICY, PastaNetwork
from .policy import Policy, PolicyError, policy_from_create
from .sandbox_network import NetworkMode, PreparedNetwork, SandboxNetwork, connect_sandbox, prepare_sandbox
from .vault import VaultError

__all__ = [
    "NETWORK_EXTENSION",
    "NetworkChoice",
    "NetworkStatus",
    "SandboxNetworks",
    "network_choice",
]

_log = logging.getLogger("osbox.server.network")

NETWORK_EXTENSION = "osbox.network"
"""The create request's `extensions` key choosing a sandbox's network mode explicitly."""
_MODES: tuple[NetworkMode, ...] = get_args(NetworkMode)
_RECORD = "network.json"
_NO_PROXY = (
    "credential injection is off for this sandbox: create it with credentialProxy {enabled: true} and a "
    "network to have its bindings injected"
)
_OFF = "networking is off on this server (start osbox serve with --network open or --network filtered)"


@dataclass(frozen=True, slots=True)
class NetworkChoice:
    """The network a sandbox is to get: its mode and (mode `filtered`) its policy."""

    mode: NetworkMode = "none"
    policy: Policy = field(default_factory=Policy.allow_all)
    requested: bool = False
    """Asked for by the create (a policy or the extension), not just the server's default: a server
    that cannot give it fails the create; the default degrades to no network, saying why."""
    credential_proxy: bool = False
    """`credentialProxy.enabled` at create: the vault's bindings are injected (with a network)."""


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """What a connected sandbox's status says about its network, and the nameserver its resolv.conf
    should name (None without a network)."""

    message: str
    nameserver: str | None = None
    ca_certificate: str | None = None
    """The credential proxy's CA (PEM) for the sandbox's trust store (None: no proxy for it)."""


def network_choice(
    server_mode: NetworkMode, network_policy: object, extension: str | None, credential_proxy: object = None
) -> NetworkChoice:
    """The network of a sandbox created with this `networkPolicy`, `osbox.network` extension and
    `credentialProxy` on a server whose switch is `server_mode`. Raises `PolicyError` (a 400) for a
    bad policy or mode."""
    policy = policy_from_create(network_policy)
    if credential_proxy is not None and not (
        isinstance(credential_proxy, dict)
        and set(credential_proxy) <= {"enabled"}
        and isinstance(credential_proxy.get("enabled", False), bool)
    ):
        raise PolicyError('credentialProxy must be {"enabled": true} or {"enabled": false}')
    proxied = isinstance(credential_proxy, dict) and credential_proxy.get("enabled") is True
    mode: NetworkMode
    requested = extension is not None or network_policy not in (None, {})
    if extension is not None:
        chosen = extension.strip().lower()
        if chosen not in _MODES:
            raise PolicyError(f"extensions.{NETWORK_EXTENSION} must be one of {', '.join(_MODES)}")
        mode = next(m for m in _MODES if m == chosen)
    elif network_policy not in (None, {}):
        mode = "filtered"
    else:
        mode = server_mode
    if mode != "filtered" and policy != Policy.allow_all():
        raise PolicyError(f"networkPolicy needs network mode 'filtered', not {mode!r}")
    return NetworkChoice(mode, policy, requested, proxied)


class SandboxNetworks:
    """The server's sandbox networks. `start` it with the server, `close` it at the end.

    networks = SandboxNetworks("open", HostNetworkConfig(), on_denied=record_event)
    await networks.start()
    status = await networks.connect("sbx-1", "/proc/4242/ns/net", state_dir, NetworkChoice("open"))
    ...
    await networks.disconnect("sbx-1")
    """

    def __init__(
        self,
        mode: NetworkMode,
        host_config: HostNetworkConfig | None = None,
        *,
        on_denied: Callable[[str, Denial], None] | None = None,
        proxy_dir: Path | None = None,
        upstream_ca: Path | None = None,
        rules_for: Callable[[str], list[dict[str, Any]]] | None = None,
        proxy_settings: ProxySettings | None = None,
    ) -> None:
        """`mode` is the server-wide switch; `host_config` lays out the host side; `on_denied` gets
        each recorded denial with its sandbox's id. The credential proxy keeps its CA in `proxy_dir`
        (None: no proxy), verifies upstreams against `upstream_ca` (None: the system's bundle), and
        gets a sandbox's compiled bindings from `rules_for` when it connects (e.g. after a restart);
        `proxy_settings`: its log cap, restart back-off and event sink."""
        self.mode = mode
        self._host_config = host_config or HostNetworkConfig()
        self._on_denied = on_denied
        self.host: HostNetwork | PastaNetwork | None = None
        self.unavailable = _OFF if mode == "none" else ""
        """Why sandboxes cannot have a network here ("" when they can)."""
        self._networks: dict[str, SandboxNetwork] = {}
        self._state_dirs: dict[str, Path] = {}
        self._prepared: dict[str, PreparedNetwork] = {}  # links of the warm pool's sandboxes, by pool id
        self._removals: set[asyncio.Task[None]] = set()
        self._proxy_dir, self._upstream_ca, self._rules_for = proxy_dir, upstream_ca, rules_for
        self._proxy_settings = proxy_settings
        self.proxy: CredentialProxy | None = None
        self._proxied: dict[str, str | None] = {}  # sandbox id -> why it has no injection (None: it has)

    async def start(self) -> None:
        """Start the host side (unless the switch is `none`); where it cannot start (not root, no
        nft), sandboxes run without a network and `unavailable` says why."""
        if self.mode == "none":
            return
        try:
            # Root: veths, NAT and nftables on the host; otherwise a user-mode stack per sandbox.
            start = HostNetwork.start if os.geteuid() == 0 else PastaNetwork.start
            self.host = await start(self._host_config)
        except NetworkUnavailable as exc:
            self.unavailable = str(exc).removeprefix("no network: ")
            _log.warning("sandboxes get no network: %s", exc)
            return
        # Rootless (pasta) sandboxes have no proxy: it redirects on the host side, which needs root.
        if self._proxy_dir is not None and isinstance(self.host, HostNetwork):
            self.proxy = CredentialProxy(
                self.host, self._proxy_dir, upstream_ca=self._upstream_ca, settings=self._proxy_settings
            )
            await self.proxy.start()

    @property
    def links_ahead(self) -> bool:
        """Whether a sandbox's link can be made before its agent is up (`prepare`, or `connect` beside
        a cold start): a root host network (pasta attaches to a running namespace only)."""
        return isinstance(self.host, HostNetwork)

    async def prepare(self, pool_id: str, netns: str) -> bool:
        """Make the link of a pre-started sandbox of the warm pool (`pool_id`) ahead, so that the create
        that takes it only puts its mode in force (`connect(..., prepared=pool_id)`). False (and nothing
        made) where there is no network or it failed: that create then makes its own."""
        if not isinstance(self.host, HostNetwork):  # none, or rootless (pasta: nothing to make ahead)
            return False
        try:
            self._prepared[pool_id] = await prepare_sandbox(self.host, pool_id, netns)
        except Exception as exc:
            _log.warning("a pre-started sandbox's network could not be made ahead: %s", exc)
            return False
        return True

    async def connect(
        self,
        sandbox_id: str,
        netns: str,
        state_dir: Path,
        choice: NetworkChoice,
        *,
        prepared: str | None = None,
        link: _Link | None = None,
        trust_store: bool = True,
        loopback: bool = True,
    ) -> NetworkStatus:
        """Set up the network `choice` asks for in the namespace at `netns`; before the entrypoint runs.
        `prepared`: the pool id whose link (`prepare`) the sandbox takes over (removed in mode `none`);
        `link`: the interface and address to keep where free (a re-adopted sandbox's);
        `trust_store`: the server can put the credential proxy's CA into the sandbox's (an image's);
        `loopback` False: the namespace's maker brings its loopback up (bwrap, still starting).

        Raises `NetworkUnavailable` or `EgressUnavailable` (the message says why) when it cannot be
        had here; nothing is left behind then.
        """
        ahead = self._prepared.pop(prepared, None) if prepared is not None else None
        self._proxied[sandbox_id] = _NO_PROXY
        if choice.mode == "none" or (self.host is None and not choice.requested):
            if ahead is not None:
                self._remove_soon(ahead)
            reason = self.unavailable or f"extensions.{NETWORK_EXTENSION} is 'none'"
            return NetworkStatus(f"No network: {reason}.")
        if self.host is None:
            raise NetworkUnavailable(f"network mode {choice.mode!r} is not available: {self.unavailable}")
        if isinstance(self.host, PastaNetwork) and choice.mode == "filtered" and not choice.requested:
            return NetworkStatus(f"No network: {ROOTLESS_POLICY}.")  # the switch's default: never unfiltered
        network = await connect_sandbox(
            self.host,
            sandbox_id,
            netns,
            choice.mode,
            policy=choice.policy,
            on_denied=self._denied(sandbox_id),
            prepared=ahead,
            interface=link.interface if link is not None else None,
            address=link.address if link is not None else None,
            loopback=loopback,
        )
        try:
            # A sandbox whose trust store cannot have the CA is not proxied after a restart either.
            _save(state_dir, choice if trust_store else replace(choice, credential_proxy=False), network)
            ca = await self._intercept(sandbox_id, network, choice, trust_store)
        except BaseException:
            await network.close()
            raise
        self._networks[sandbox_id] = network
        self._state_dirs[sandbox_id] = state_dir
        status = self.status(sandbox_id)
        if ca is not None:
            injected = " Its Credential Vault's bindings are injected by the credential proxy."
            status = replace(status, message=status.message + injected, ca_certificate=ca)
        return status

    async def _intercept(
        self, sandbox_id: str, network: SandboxNetwork, choice: NetworkChoice, trust_store: bool
    ) -> str | None:
        """Put the sandbox behind the credential proxy if it asked; its CA (None: not behind it)."""
        if not choice.credential_proxy:
            return None
        if not trust_store:
            self._proxied[sandbox_id] = (
                "credential injection is off for this sandbox: it runs without an image, so its trust "
                "store is the host's, which osbox does not change"
            )
            return None
        if self.proxy is None or self.proxy.unavailable or network.attachment is None:
            why = self.proxy.unavailable if self.proxy is not None else "the server runs no credential proxy"
            self._proxied[sandbox_id] = f"credential injection is not available here: {why}"
            return None
        attachment = network.attachment
        rules = self._rules_for(sandbox_id) if self._rules_for is not None else []
        await self.proxy.attach(sandbox_id, attachment.interface, attachment.address, rules)
        self._proxied[sandbox_id] = None
        return self.proxy.ca_certificate

    def bindings_refused(self, sandbox_id: str) -> str | None:
        """Why the sandbox's vault can hold no bindings (None: they are injected)."""
        return self._proxied.get(sandbox_id, _NO_PROXY)

    def bindings_sink(self, sandbox_id: str) -> BindingsSink | None:
        """Where the sandbox's vault sends its bindings after a change (None: nowhere, no proxy)."""
        proxy = self.proxy
        if proxy is None or self.bindings_refused(sandbox_id) is not None:
            return None

        async def apply(rules: list[dict[str, Any]]) -> None:
            try:
                await proxy.set_rules(sandbox_id, rules)
            except ProxyUnavailable as exc:
                raise VaultError(412, "PRECONDITION_FAILED", f"the vault changed, but {exc}") from None

        return apply

    def _remove_soon(self, prepared: PreparedNetwork) -> None:
        """Remove a link made ahead for a sandbox that is to have none, after the create: deleting a
        veth waits for the kernel (10-20 ms). Meanwhile its namespace's table refuses everything but
        its loopback, as it did in the pool, so the sandbox has no network from the start."""

        async def remove() -> None:
            try:
                await prepared.close()
            except Exception:
                _log.exception("removing the link of a pre-started sandbox failed")

        task = asyncio.get_running_loop().create_task(remove())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def readopt(self, sandbox_id: str, netns: str, state_dir: Path) -> NetworkStatus:
        """Give a re-adopted sandbox the network (and policy) it had. Never raises: a sandbox whose
        network cannot be set up again runs with none (fail-closed), and its status says why."""
        choice, link = _load(state_dir)
        if choice.mode == "none":
            return NetworkStatus("No network.")
        try:
            if self.host is None:
                raise NetworkUnavailable(self.unavailable)
            await self.host.drop_stale_link(sandbox_id, link.interface if link is not None else None)
            return await self.connect(sandbox_id, netns, state_dir, choice, link=link)
        except Exception as exc:
            _log.warning("sandbox %s runs without its network after the restart: %s", sandbox_id, exc)
            return NetworkStatus(f"No network: setting it up again after the restart failed: {exc}.")

    def status(self, sandbox_id: str) -> NetworkStatus:
        """The status of a connected sandbox's network."""
        network = self._networks[sandbox_id]
        nameserver = network.nameserver
        address = network.attachment.address if network.attachment is not None else None
        if network.egress is None:
            return NetworkStatus(f"Network: open (address {address}, DNS {nameserver}).", nameserver)
        enforcement = network.egress.enforcement
        why = f": {enforcement.reason}" if enforcement.reason else ""
        return NetworkStatus(
            f"Network: filtered by its egress policy (address {address}, DNS {nameserver}; "
            f"enforcement {enforcement.mode}{why}).",
            nameserver,
        )

    async def disconnect(self, sandbox_id: str) -> None:
        """Remove the sandbox's network (link, nft table, resolver), or the link made ahead for a
        pre-started one (`prepare`); no-op for one without."""
        network = self._networks.pop(sandbox_id, None) or self._prepared.pop(sandbox_id, None)
        self._state_dirs.pop(sandbox_id, None)
        self._proxied.pop(sandbox_id, None)
        try:
            if self.proxy is not None:
                await self.proxy.detach(sandbox_id)
        finally:
            if network is not None:
                await network.close()

    async def sweep(self, live_ids: Iterable[str]) -> None:
        """Remove host ends a previous run left for sandboxes that are gone (after re-adoption)."""
        if self.host is not None:
            await self.host.sweep(live_ids)

    def policy_store(self, sandbox_id: str) -> PolicyStore:
        """What the egress API of this sandbox works on: its policy, or why it has none."""
        network = self._networks.get(sandbox_id)
        if network is None or network.egress is None:
            if isinstance(self.host, PastaNetwork):
                reason = ROOTLESS_POLICY
            elif network is not None:
                reason = (
                    "network mode 'open': nothing is filtered; create the sandbox with a networkPolicy "
                    f"(or extensions.{NETWORK_EXTENSION}='filtered') to have a policy"
                )
            else:
                reason = f"the sandbox has no network: {self.unavailable or 'it was created without one'}"
            return _Unfiltered(reason)
        return _Filtered(network, self._state_dirs[sandbox_id])

    async def close(self) -> None:
        """Stop every resolver and remove every link and the host's table. Sandboxes keep running;
        a restarted server connects them again (`readopt`)."""
        try:
            if self.proxy is not None:
                await self.proxy.close()
                self.proxy = None
            for sandbox_id in [*self._networks, *self._prepared]:
                try:
                    await self.disconnect(sandbox_id)
                except Exception:
                    _log.exception("closing the network of sandbox %s failed", sandbox_id)
        finally:
            self._state_dirs.clear()
            if self._removals:
                await asyncio.gather(*self._removals, return_exceptions=True)
            if self.host is not None:
                await self.host.close()
                self.host = None

    def _denied(self, sandbox_id: str) -> Callable[[Denial], None] | None:
        on_denied = self._on_denied
        if on_denied is None:
            return None
        return lambda denial: on_denied(sandbox_id, denial)


class _Unfiltered:
    def __init__(self, reason: str) -> None:
        self.policy = Policy.allow_all()
        self.enforcement = Enforcement("none", reason)

    async def replace(self, policy: Policy) -> None:
        raise EgressUnavailable(f"cannot change the egress policy: {self.enforcement.reason}")


class _Filtered:
    def __init__(self, network: SandboxNetwork, state_dir: Path) -> None:
        assert network.egress is not None
        self._network = network
        self._egress = network.egress
        self._state_dir = state_dir

    @property
    def policy(self) -> Policy:
        return self._egress.policy

    @property
    def enforcement(self) -> Enforcement:
        return self._egress.enforcement

    async def replace(self, policy: Policy) -> None:
        await self._network.replace_policy(policy)
        choice = replace(_load(self._state_dir)[0], mode="filtered", policy=policy)
        _save(self._state_dir, choice, self._network)


@dataclass(frozen=True, slots=True)
class _Link:
    """A sandbox's host end and address as recorded: what it gets again after a restart."""

    interface: str
    address: IPv4Address


def _save(state_dir: Path, choice: NetworkChoice, network: SandboxNetwork) -> None:
    """Write `network.json` atomically into the state dir (the server's own: no sandbox writes there)."""
    record: dict[str, object] = {
        "mode": choice.mode,
        "policy": choice.policy.to_model().model_dump(mode="json", by_alias=True),
        "credentialProxy": choice.credential_proxy,
    }
    if network.attachment is not None:
        record["interface"] = network.attachment.interface
        record["address"] = str(network.attachment.address)
    temp = state_dir / f".{_RECORD}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.replace(temp, state_dir / _RECORD)


def _load(state_dir: Path) -> tuple[NetworkChoice, _Link | None]:
    """The recorded choice and link; mode `none` when there is none or it is unreadable (fail-closed)."""
    try:
        fd = os.open(state_dir / _RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as record:
            saved = json.load(record)
        mode = saved["mode"]
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}")
        proxied = saved.get("credentialProxy") is True
        choice = NetworkChoice(
            mode, policy_from_create(saved["policy"]), requested=True, credential_proxy=proxied
        )
        link = None
        if isinstance(saved.get("interface"), str) and "address" in saved:
            link = _Link(saved["interface"], IPv4Address(saved["address"]))
        return choice, link
    except FileNotFoundError:
        return NetworkChoice(), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _log.warning("the network record in %s is unusable (%s): no network", state_dir, exc)
        return NetworkChoice(), None
