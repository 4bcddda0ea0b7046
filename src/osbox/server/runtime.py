"""Everything one server instance owns, started and stopped together: store, backend, managers."""

from __future__ import annotations

import logging
import resource
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from starlette.types import ASGIApp

from ._backend import default_backend
from ._backend.base import Backend, SandboxHandle
from ._store import Store
from .config import ServerConfig
from .datadir import prepare_data_dir
from .egress.app import create_egress_app
from .egress.credential_proxy import ProxySettings
from .egress.engine import Denial
from .egress.hostnet import HostNetworkConfig
from .egress.networks import SandboxNetworks
from .egress.vault import CredentialVault
from .execd import ExecdLimits, ExecdService
from .forwarder import ForwarderPool
from .lifecycle.manager import SandboxManager
from .lifecycle.records import format_time
from .lifecycle.snapshots import SnapshotManager
from .tokens import TokenMinter, load_or_create_key

__all__ = ["Runtime"]


def _default_backend(config: ServerConfig, networks: SandboxNetworks) -> Backend:
    return default_backend(
        config.data_dir,
        pool_size=config.warm_pool_size,
        die_with_server=config.sandboxes_die_with_server,
        pool_disk_bytes=config.default_disk_bytes,
        networks=networks,
    )


def _raise_open_files_limit() -> None:
    """Raise this process's soft descriptor limit to its hard limit (often 1024 of 500,000+).

    The server holds a few descriptors per running command, session run and code context of
    every sandbox (see `execd/state.py`); the per-sandbox budgets keep one sandbox from taking
    them all, this keeps the sum of many sandboxes from hitting a default made for small tools.
    Sandboxes inherit it, as containers inherit their engine's (Docker's is in the millions).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("osbox.server").warning("cannot raise the open-files limit: %s", exc)


class Runtime:
    """The server's state. Construct, `await start()` inside the event loop, `await close()` at the end."""

    def __init__(self, config: ServerConfig, backend: Backend | None = None) -> None:
        self.config = config
        self._given_backend = backend
        self._execd: ExecdService
        self.store: Store
        self.backend: Backend
        self.manager: SandboxManager
        self.snapshots: SnapshotManager
        self.forwarders: ForwarderPool
        self.networks: SandboxNetworks

    async def start(self) -> None:
        """Check and prepare the data dir, open the store, start the backend, re-adopt surviving
        sandboxes, start the reaper."""
        _raise_open_files_limit()
        prepare_data_dir(self.config)
        tokens = TokenMinter(load_or_create_key(self.config.secret_key_path))
        self.store = Store(self.config.db_path)
        self.networks = SandboxNetworks(
            self.config.network,
            # The prefix claimed is kept in the data dir: a restart claims it again and finds its links.
            replace(
                self.config.network_host or HostNetworkConfig(), remember_in=self.config.network_prefix_path
            ),
            on_denied=self._record_denial,
            proxy_dir=self.config.data_dir / "credential-proxy",
            upstream_ca=self.config.credential_proxy_upstream_ca,
            rules_for=lambda sandbox_id: self._vault(sandbox_id).rules(),
            proxy_settings=ProxySettings(
                log_max_bytes=self.config.credential_proxy_log_max_bytes,
                restart_delays=self.config.credential_proxy_restart_delays,
                on_event=self._record_proxy_event,
            ),
        )
        self.backend = self._given_backend or _default_backend(self.config, self.networks)
        self.manager = SandboxManager(self.config, self.store, self.backend, tokens)
        self.snapshots = SnapshotManager(self.config, self.store, self.manager)
        self.forwarders = ForwarderPool(self.config.host, self.sandbox_handle)
        self.manager.add_forget_hook(self.forwarders.close_sandbox)
        config = self.config
        limits = ExecdLimits(
            max_running_commands=config.max_running_commands,
            max_sessions=config.max_sessions,
            max_code_contexts=config.max_code_contexts,
            command_log_max_bytes=config.command_log_max_bytes,
            kill_on_disconnect=config.kill_on_disconnect,
        )
        self._execd = ExecdService(log_dir=config.data_dir / "execd", limits=limits)
        self.manager.add_forget_hook(self._execd.forget)
        self.snapshots.start()
        await self.networks.start()
        try:
            await self.manager.start()
            await self.networks.sweep(self.manager.live_ids())  # links of sandboxes gone meanwhile
            await self.backend.start()  # after re-adoption: a warm pool's start-ups compete for the CPU
        except BaseException:
            await self.networks.close()  # a server that failed to start leaves no host table behind
            raise  # after re-adoption: a warm pool's start-ups compete for the CPU

    @property
    def execd(self) -> ExecdService:
        """The execd service the proxy dispatches port 44772 to."""
        return self._execd

    def sandbox_handle(self, sandbox_id: str) -> SandboxHandle:
        """The live handle of a Running sandbox (404/409 ApiError otherwise)."""
        return self.manager.handle(sandbox_id)

    def execd_token(self, sandbox_id: str) -> str:
        """The per-sandbox execd access token (404 ApiError for an unknown sandbox)."""
        return self.manager.tokens(sandbox_id)[0]

    def egress_app(self, sandbox_id: str) -> ASGIApp:
        """The egress API of a Running sandbox (404/409 ApiError otherwise), over its policy."""
        self.sandbox_handle(sandbox_id)
        auth_token = self.manager.tokens(sandbox_id)[1]
        return create_egress_app(
            self.networks.policy_store(sandbox_id),
            auth_token=auth_token,
            vault=self._vault(sandbox_id),
            on_bindings=self.networks.bindings_sink(sandbox_id),
        )

    def _vault(self, sandbox_id: str) -> CredentialVault:
        """The sandbox's Credential Vault; bindings refused (412) where they would not be injected."""
        return CredentialVault(
            self.config.sandboxes_dir / sandbox_id,
            self.manager.vault_key(sandbox_id),
            sandbox_id,
            bindings_refused=self.networks.bindings_refused(sandbox_id),
        )

    def _record_denial(self, sandbox_id: str, denial: Denial) -> None:
        """A denied name or connection, as an event of the sandbox (its diagnostics show it)."""
        if denial.kind == "dns":
            message = f"Egress denied: DNS query for {denial.target} ({denial.detail}) answered NXDOMAIN."
        else:
            message = f"Egress denied: connection to {denial.target} ({denial.detail}) refused."
        try:
            self.store.add_event(
                sandbox_id,
                at=format_time(denial.at),
                state="Running",
                reason="egress_denied",
                message=message,
            )
        except Exception:  # a denial must never break the resolver that reports it
            logging.getLogger("osbox.server").exception("recording an egress denial failed")

    def _record_proxy_event(self, sandbox_ids: Sequence[str], reason: str, message: str) -> None:
        """A crash or recovery of the credential proxy, as an event of each sandbox it serves."""
        at = format_time(datetime.now(UTC))
        for sandbox_id in sandbox_ids:
            try:
                self.store.add_event(sandbox_id, at=at, state="Running", reason=reason, message=message)
            except Exception:
                logging.getLogger("osbox.server").exception("recording a credential proxy event failed")

    async def close(self) -> None:
        """Stop forwarders and copies, destroy or keep sandboxes per config, release everything."""
        try:
            await self.forwarders.close()
            await self.snapshots.close()
            await self.manager.close()
            await self._execd.aclose()
            await self.backend.close()
        finally:
            try:
                await self.networks.close()  # also after a failure: no host table outlives the server
            finally:
                self.store.close()
