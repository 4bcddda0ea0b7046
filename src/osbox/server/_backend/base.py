"""The isolation backend: the one narrow interface between the HTTP apps and the machine.

The lifecycle app and the execd app only ever talk to a `Backend` and the `SandboxHandle`s it
returns. Everything that knows about namespaces, cgroups, bubblewrap or the in-sandbox agent
lives behind this interface, so another backend (a container engine, a microVM) can be added
without touching the API layer.

    backend = BwrapBackend(data_dir)
    handle = await backend.create(spec)
    proc = await handle.spawn(["bash", "-c", "echo hi"], env={}, cwd="/workspace")
    ...
    await backend.destroy(handle)
"""

from __future__ import annotations

import abc
import asyncio
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Backend",
    "BackendError",
    "Mount",
    "SandboxHandle",
    "SandboxProcess",
    "SandboxSpec",
]


class BackendError(Exception):
    """The backend could not do what was asked; the message says why, for a person."""


@dataclass(frozen=True)
class Mount:
    """A host directory made visible inside the sandbox.

    With `beneath`, `host_path` lies inside that directory and is reached from it without
    following any symlink: the tree below `beneath` is writable by sandboxes (a named volume's
    `subPath`), so only `beneath` itself is trusted as a path.
    """

    host_path: Path
    sandbox_path: str
    read_only: bool = False
    beneath: Path | None = None


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to start one sandbox.

    `state_dir` is a host directory owned by the server for this sandbox alone: the backend keeps
    the sandbox's private `/workspace`, `/tmp` and home there, plus its sockets and logs.
    """

    sandbox_id: str
    entrypoint: Sequence[str]
    state_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cpu_cores: float | None = None  # e.g. 0.5 for "500m"
    memory_bytes: int | None = None
    pids_max: int | None = None
    #: Cap on everything the sandbox can write except its mounts (None: no cap).
    disk_bytes: int | None = None
    mounts: Sequence[Mount] = ()
    hostname: str = "sandbox"


class SandboxProcess(abc.ABC):
    """A process started inside a sandbox by `SandboxHandle.spawn`."""

    pid: int  # the pid as seen from the host

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for exit; returns the exit code, or -N when killed by signal N."""

    @abc.abstractmethod
    def signal_group(self, signum: int) -> None:
        """Send a signal to the process's whole process group (no error if it is gone)."""


class SandboxHandle(abc.ABC):
    """A live sandbox. Every operation runs inside the sandbox's own view, as its own user."""

    sandbox_id: str
    #: Whether cpu/memory/pids limits are really enforced (cgroups available), and why not if not.
    limits_enforced: bool
    limits_message: str
    #: A sentence for the sandbox's status about its disk quota ("" when there is none to tell).
    disk_message: str = ""
    #: Host path of the file that collects the entrypoint's stdout and stderr.
    log_path: Path
    #: The host uids the sandbox's processes may run as. A file in a sandbox-writable tree owned
    #: by any other uid (host root, say) was not made by the sandbox, and the server must not trust it.
    host_uids: range

    def oom_kills(self) -> int:
        """How many of the sandbox's processes the kernel's OOM killer has killed (0: none, or unknown).

        Read it before `Backend.destroy`, which forgets it."""
        return 0

    @abc.abstractmethod
    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> SandboxProcess:
        """Start `argv` inside the sandbox in a new session/process group.

        `env` is merged over the sandbox's base environment (`HOME`, `PATH`, `USER`, the spec's env).
        `cwd` is a path inside the sandbox.

        `stdin`/`stdout`/`stderr` are host file descriptors (e.g. pipe ends) handed to the child;
        the caller keeps ownership of its copies. None means /dev/null.
        """

    @abc.abstractmethod
    async def call(self, op: str, **args: Any) -> Any:
        """Run a file-system operation inside the sandbox; returns its JSON-able result.

        Raises `SandboxOSError` (from `osbox.server._agent.protocol`) carrying errno and a message.
        """

    @abc.abstractmethod
    async def open_file(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open `path` inside the sandbox's view; returns a host fd the caller must close."""

    @abc.abstractmethod
    async def connect(self, port: int) -> socket.socket:
        """A connected TCP socket to 127.0.0.1:`port` in the sandbox's own network."""

    async def open_connection(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """`connect` wrapped as asyncio streams."""
        return await asyncio.open_connection(sock=await self.connect(port))


class Backend(abc.ABC):
    """Creates, freezes, thaws and destroys sandboxes."""

    #: Shown in sandbox status messages, e.g. "bubblewrap (host filesystem read-only)".
    description: str

    async def start(self) -> None:  # noqa: B027 (optional: most backends have nothing to start)
        """Start background work (e.g. a warm pool of pre-started sandboxes), inside the event loop."""

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Start a sandbox and return once it accepts operations."""

    @abc.abstractmethod
    async def pause(self, handle: SandboxHandle) -> None:
        """Freeze every process of the sandbox."""

    @abc.abstractmethod
    async def resume(self, handle: SandboxHandle) -> None:
        """Thaw every process of the sandbox."""

    @abc.abstractmethod
    async def destroy(self, handle: SandboxHandle) -> None:
        """Kill the whole tree and remove its cgroups and mounts. Idempotent. Keeps `state_dir`."""

    @abc.abstractmethod
    async def adopt(self, spec: SandboxSpec) -> SandboxHandle | None:
        """After a server restart: re-attach to a sandbox still running, or None if impossible.

        When it returns None, everything the old tree left (processes, cgroups) has been removed.
        """

    async def remove_state(self, state_dir: Path) -> None:
        """Remove a sandbox's state dir for good (after `destroy`, or for a sandbox never adopted)."""
        await asyncio.to_thread(shutil.rmtree, state_dir, True)

    @abc.abstractmethod
    def is_alive(self, handle: SandboxHandle) -> bool:
        """False once the sandbox's tree has died on its own."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release backend-wide resources (not the sandboxes it handed out)."""
