"""`Sandbox` / `AsyncSandbox`: the pieces both twins share (defaults, what "ready" means, poll backoff,
checked runs, finished background commands).

The twins themselves are `AsyncSandbox` (`osbox._async.sandbox`, written by hand) and `Sandbox`
(`osbox._sync.sandbox`, generated from it by `scripts/unasync.py`), with their `files`
(`osbox._async.sandbox_files`) and background command handles (`osbox._async.commands`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ._exceptions import CommandFailedError, NotFoundError, SandboxError
from ._wire import EXECD_PORT
from .models.events import COMMAND_EXEC_ERROR, Execution, ExecutionError
from .models.execd import CommandStatusResponse
from .models.lifecycle import NetworkPolicy, SandboxState
from .models.lifecycle import Sandbox as SandboxInfo

__all__ = ["DEFAULT_ENTRYPOINT", "DEFAULT_IMAGE", "DEFAULT_RESOURCE_LIMITS", "EXECD_PORT"]

DEFAULT_IMAGE = "python:3.11"
#: Keeps a sandbox's PID 1 alive with nothing to do, as the official SDKs do.
DEFAULT_ENTRYPOINT = ("tail", "-f", "/dev/null")
#: What `Sandbox.create` asks for unless told otherwise, as the official SDKs do. Always sent: the spec
#: requires `resourceLimits` outside pool mode and the reference server answers 422 without it.
DEFAULT_RESOURCE_LIMITS: Mapping[str, str] = MappingProxyType({"cpu": "1", "memory": "2Gi"})
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
    network_policy: NetworkPolicy | Mapping[str, Any] | None = None,
    credential_proxy: bool = False,
) -> dict[str, Any]:
    return {
        "network_policy": network_policy,
        "credential_proxy": {"enabled": True} if credential_proxy else None,
        "image": image,
        "entrypoint": list(entrypoint if entrypoint is not None else DEFAULT_ENTRYPOINT),
        "timeout": None if lifetime is None else int(lifetime),
        "env": env,
        "metadata": metadata,
        # The caller's limits over the defaults: `{"cpu": "4"}` keeps the default memory.
        "resource_limits": {**DEFAULT_RESOURCE_LIMITS, **(resource_limits or {})},
    }


# --- the pieces of `sandbox.files`, `run(check=True)` and background command handles ----------------------


def _checked(command: str, execution: Execution) -> Execution:
    """`execution`, if the command succeeded (exit code 0); else raises `CommandFailedError`."""
    if execution.exit_code != 0:
        raise CommandFailedError(command, execution)
    return execution


def _missing(path: str, exc: NotFoundError) -> NotFoundError:
    """A `NotFoundError` for a sandbox `path` whose message names it (servers' messages may not)."""
    return NotFoundError(
        response=exc.response,
        code=exc.code,
        message=f"{path} does not exist in the sandbox ({exc.message or exc.code})",
        body=exc.body,
        request_id=exc.request_id,
        retry_after=exc.retry_after,
    )


def _finished_execution(command_id: str, output: str, status: CommandStatusResponse) -> Execution:
    """The `Execution` of a background command that has exited: its merged output is `stdout` (execd
    keeps one log per command), the exit code and error what its status says."""
    error = None
    if status.exit_code != 0:
        error = ExecutionError(
            ename=COMMAND_EXEC_ERROR,
            evalue=str(status.exit_code),
            traceback=[status.error] if status.error else [],
        )
    return Execution(
        id=command_id,
        stdout=output,
        exit_code=status.exit_code,
        error=error,
        complete=True,
        signal=status.signal,
        timed_out=status.timed_out,
    )
