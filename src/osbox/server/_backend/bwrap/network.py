"""A bubblewrap sandbox's network: attached to the namespace bwrap made (`--unshare-all`: loopback only)
through its PID 1's `/proc/<pid>/ns/net`, before the entrypoint starts; removed when it is destroyed;
attached again when a restarted server adopts it. A pre-started sandbox of the warm pool gets its link
ahead (`prepare`); the create that takes it only puts its mode and policy in force. A create that starts
its own sandbox (the pool empty, or off) sets its network up while the agent starts (`EarlyNetwork`):
the namespace exists as soon as bwrap reports its child, so the create waits for the slower of the two,
not their sum; the entrypoint still starts only once the network (its policy included) is in force. The
work is
`egress.networks.SandboxNetworks`'; this module only ties it to the handle: `handle.nameserver` is what
the sandbox's resolv.conf should name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from ...egress.engine import EgressUnavailable
from ...egress.hostnet import NetworkUnavailable
from ...egress.networks import NetworkChoice, NetworkStatus, SandboxNetworks
from ..base import BackendError, SandboxSpec
from .sandbox import BwrapSandbox

__all__ = ["EarlyNetwork", "connect", "disconnect", "prepare", "readopt"]

_log = logging.getLogger("osbox.server.backend")


def _netns(handle: BwrapSandbox) -> str:
    return f"/proc/{handle.agent_pid}/ns/net"


async def prepare(networks: SandboxNetworks | None, handle: BwrapSandbox) -> None:
    """Make the link of a pre-started sandbox ahead (where the server has networks; never raises)."""
    if networks is not None and await networks.prepare(handle.sandbox_id, _netns(handle)):
        handle.network_ahead = handle.sandbox_id


class EarlyNetwork:
    """The network of a sandbox a create starts itself, set up beside its start.

        early = EarlyNetwork(networks, spec)     # nothing runs yet
        early.start(child_pid)                  # bwrap made the namespace: set the network up
        ...                                     # the agent starts meanwhile
        await connect(networks, handle, spec.network, early=early)  # waits for it, before the entrypoint
        await early.abandon()                   # the create failed: nothing of it is left

    Only where the link can be made before the agent is up (`SandboxNetworks.links_ahead`) and the
    sandbox is to have a network; otherwise `start` does nothing and `connect` does the work itself.
    """

    def __init__(self, networks: SandboxNetworks | None, spec: SandboxSpec) -> None:
        choice = spec.network or NetworkChoice()
        self._networks = networks if networks is not None and networks.links_ahead else None
        self._wanted = self._networks is not None and choice.mode != "none"
        self._spec = spec
        self._task: asyncio.Task[NetworkStatus] | None = None

    def start(self, pid: int) -> None:
        """Start setting the network up in the namespace of `pid` (the sandbox's PID 1, as bwrap
        reported it, still starting); a no-op when the sandbox is to have none."""
        if not self._wanted or self._task is not None or self._networks is None:
            return
        spec = self._spec
        self._task = asyncio.get_running_loop().create_task(
            self._networks.connect(
                spec.sandbox_id,
                f"/proc/{pid}/ns/net",
                spec.state_dir,
                spec.network or NetworkChoice(),
                trust_store=spec.image is not None,
                loopback=False,  # bwrap brings `lo` up itself (and fails should it be up already)
            ),
            name=f"osbox-network-{spec.sandbox_id}",
        )

    @property
    def started(self) -> bool:
        """Whether `start` set anything going (else `connect` sets the network up itself)."""
        return self._task is not None

    async def result(self) -> NetworkStatus:
        """The network's status once it is set up; raises what setting it up raised."""
        assert self._task is not None
        return await asyncio.shield(self._task)  # a cancelled create leaves the clean-up to `abandon`

    async def abandon(self) -> None:
        """Undo it (the create failed): stop it if it still runs, remove what it set up. Idempotent."""
        task, self._task = self._task, None
        if task is None or self._networks is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task  # its own failure (or cancellation) left nothing behind
        if not task.cancelled() and task.exception() is None:
            try:
                await self._networks.disconnect(self._spec.sandbox_id)
            except Exception:
                _log.exception("removing the network of sandbox %s failed", self._spec.sandbox_id)


async def connect(
    networks: SandboxNetworks | None,
    handle: BwrapSandbox,
    choice: NetworkChoice | None,
    *,
    trust_store: bool = False,
    early: EarlyNetwork | None = None,
) -> None:
    """Give the sandbox the network `choice` asks for (or wait for the one `early` is setting up);
    `BackendError` saying why when it cannot. `trust_store`: the agent can put the credential proxy's
    CA (`handle.trusted_ca`) into it."""
    choice = choice or NetworkChoice()
    ahead, handle.network_ahead = handle.network_ahead, None
    if networks is None:
        if choice.mode != "none":
            raise BackendError(f"network mode {choice.mode!r}: this backend was started without networking")
        return
    if early is not None and early.started:
        status = await _status(early.result())
    else:
        status = await _status(
            networks.connect(
                handle.sandbox_id,
                _netns(handle),
                handle.layout.state_dir,
                choice,
                prepared=ahead,
                trust_store=trust_store,
            )
        )
    handle.network_message, handle.nameserver = status.message, status.nameserver
    handle.trusted_ca = status.ca_certificate


async def _status(connecting: Awaitable[NetworkStatus]) -> NetworkStatus:
    """What `connecting` gives, its failures as `BackendError` saying why."""
    try:
        return await connecting
    except (NetworkUnavailable, EgressUnavailable) as exc:
        raise BackendError(str(exc)) from None
    except (OSError, RuntimeError) as exc:
        raise BackendError(f"its network could not be set up: {exc}") from None


async def readopt(networks: SandboxNetworks | None, handle: BwrapSandbox) -> None:
    """Give an adopted sandbox the network it had (see `SandboxNetworks.readopt`; never raises)."""
    if networks is not None:
        status = await networks.readopt(handle.sandbox_id, _netns(handle), handle.layout.state_dir)
        handle.network_message, handle.nameserver = status.message, status.nameserver


async def disconnect(networks: SandboxNetworks | None, handle: BwrapSandbox) -> None:
    """Remove the sandbox's network; a failure is logged (the sandbox is gone either way)."""
    if networks is None:
        return
    ahead, handle.network_ahead = handle.network_ahead, None
    for key in dict.fromkeys(k for k in (handle.sandbox_id, ahead) if k is not None):
        try:
            await networks.disconnect(key)
        except Exception:
            _log.exception("removing the network of sandbox %s failed", key)
    handle.nameserver = None
