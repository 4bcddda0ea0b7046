"""`Sandbox` / `AsyncSandbox`: the pieces both twins share (defaults, what "ready" means, poll backoff).

The twins themselves are `AsyncSandbox` (`osbox._async.sandbox`, written by hand) and `Sandbox`
(`osbox._sync.sandbox`, generated from it by `scripts/unasync.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._exceptions import SandboxError
from ._wire import EXECD_PORT
from .models.lifecycle import Sandbox as SandboxInfo
from .models.lifecycle import SandboxState

__all__ = ["DEFAULT_ENTRYPOINT", "DEFAULT_IMAGE", "EXECD_PORT"]

DEFAULT_IMAGE = "python:3.11"
#: Keeps a sandbox's PID 1 alive with nothing to do, as the official SDKs do.
DEFAULT_ENTRYPOINT = ("tail", "-f", "/dev/null")
_GONE = (SandboxState.FAILED, SandboxState.TERMINATED, SandboxState.STOPPING)


def _is_running(sandbox_id: str, info: SandboxInfo, *, out_of_time: bool, ready_timeout: float) -> bool:
    """Whether the sandbox runs; raises `SandboxError` if it never will, or if it is `out_of_time`."""
    state = info.status.state
    if state == SandboxState.RUNNING:
        return True
    if state in _GONE:
        why = ": ".join(filter(None, (info.status.reason, info.status.message)))
        raise SandboxError(f"sandbox {sandbox_id} is {state}{f' ({why})' if why else ''}")
    if out_of_time:
        raise SandboxError(
            f"sandbox {sandbox_id} is still {state} after {ready_timeout:g} s; "
            "raise ready_timeout= if the image takes longer to start"
        )
    return False


class _Backoff:
    """Waits between polls: 50 ms, doubling up to 1 s."""

    def __init__(self) -> None:
        self._delay = 0.025

    def next(self) -> float:
        self._delay = min(self._delay * 2, 1.0)
        return self._delay


def _create_fields(
    image: str,
    entrypoint: Sequence[str] | None,
    lifetime: float | None,
    env: Mapping[str, str] | None,
    metadata: Mapping[str, str] | None,
    resource_limits: Mapping[str, str] | None,
) -> dict[str, Any]:
    return {
        "image": image,
        "entrypoint": list(entrypoint if entrypoint is not None else DEFAULT_ENTRYPOINT),
        "timeout": None if lifetime is None else int(lifetime),
        "env": env,
        "metadata": metadata,
        "resource_limits": resource_limits,
    }
