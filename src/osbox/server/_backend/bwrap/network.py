"""A bubblewrap sandbox's network: attached to the namespace bwrap made (`--unshare-all`: loopback only)
through its PID 1's `/proc/<pid>/ns/net`, before the entrypoint starts; removed when it is destroyed;
attached again when a restarted server adopts it. A pre-started sandbox of the warm pool gets its link
ahead (`prepare`); the create that takes it only puts its mode and policy in force. The work is
`egress.networks.SandboxNetworks`'; this module only ties it to the handle: `handle.nameserver` is what
the sandbox's resolv.conf should name.
"""

from __future__ import annotations

import logging

from ...egress.engine import EgressUnavailable
from ...egress.hostnet import NetworkUnavailable
from ...egress.networks import NetworkChoice, SandboxNetworks
from ..base import BackendError
from .sandbox import BwrapSandbox

__all__ = ["connect", "disconnect", "prepare", "readopt"]

_log = logging.getLogger("osbox.server.backend")


def _netns(handle: BwrapSandbox) -> str:
    return f"/proc/{handle.agent_pid}/ns/net"


async def prepare(networks: SandboxNetworks | None, handle: BwrapSandbox) -> None:
    """Make the link of a pre-started sandbox ahead (where the server has networks; never raises)."""
    if networks is not None and await networks.prepare(handle.sandbox_id, _netns(handle)):
        handle.network_ahead = handle.sandbox_id


async def connect(
    networks: SandboxNetworks | None,
    handle: BwrapSandbox,
    choice: NetworkChoice | None,
    *,
    trust_store: bool = False,
) -> None:
    """Give the sandbox the network `choice` asks for; `BackendError` saying why when it cannot.
    `trust_store`: the agent can put the credential proxy's CA (`handle.trusted_ca`) into it."""
    choice = choice or NetworkChoice()
    ahead, handle.network_ahead = handle.network_ahead, None
    if networks is None:
        if choice.mode != "none":
            raise BackendError(f"network mode {choice.mode!r}: this backend was started without networking")
        return
    try:
        status = await networks.connect(
            handle.sandbox_id,
            _netns(handle),
            handle.layout.state_dir,
            choice,
            prepared=ahead,
            trust_store=trust_store,
        )
    except (NetworkUnavailable, EgressUnavailable) as exc:
        raise BackendError(str(exc)) from None
    except (OSError, RuntimeError) as exc:
        raise BackendError(f"its network could not be set up: {exc}") from None
    handle.network_message, handle.nameserver = status.message, status.nameserver
    handle.trusted_ca = status.ca_certificate


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
