"""The isolation backend: the one narrow interface between the HTTP apps and the machine.

The lifecycle app and the execd app only ever talk to a `Backend` and the `SandboxHandle`s it
returns. Everything that knows about namespaces, cgroups, bubblewrap or the in-sandbox agent
lives behind this interface, so another backend (a container engine, a microVM) can be added
without touching the API layer.

    backend = default_backend(data_dir)          # the factory in `osbox.server._backend`
    handle = await backend.create(spec)
    proc = await handle.spawn(["bash", "-c", "echo hi"], env={}, cwd="/workspace")
    info = await handle.files.stat(["/workspace"])
    ...
    await backend.destroy(handle)

A handle offers processes (`spawn`), files and directories (`handle.files`), bash-session state
(`handle.sessions`), resource usage (`usage()`) and ports (`connect`). Every failure inside the
sandbox is a `SandboxOSError` (errno + message, paths as the sandbox sees them) or a `ValueError`
(bad arguments); a sandbox that is gone or broken is a `BackendError`.
"""

from __future__ import annotations

import abc
import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

if TYPE_CHECKING:
    from ..egress.networks import NetworkChoice

__all__ = [
    "Backend",
    "BackendError",
    "FileInfo",
    "ImageRoot",
    "JSONValue",
    "Mount",
    "ReplaceCount",
    "ResourceUsage",
    "SandboxFiles",
    "SandboxHandle",
    "SandboxOSError",
    "SandboxProcess",
    "SandboxSessions",
    "SandboxSpec",
    "UploadPlan",
    "WatchEvent",
]

#: A request body passed through as parsed JSON, for the sandbox side to check (a bad shape is a
#: `ValueError` there, so one definition of each rule).
JSONValue = object


class BackendError(Exception):
    """The backend could not do what was asked; the message says why, for a person."""


class SandboxOSError(OSError):
    """An operation failed inside the sandbox: `errno`, `strerror` and `filename` as seen inside
    (paths are sandbox paths), e.g. `SandboxOSError(errno.ENOENT, "no such file", "/workspace/x")`."""


class FileInfo(TypedDict):
    """One file's metadata, as the execd API's `FileInfo` (`mode`: octal digits as a decimal, 644)."""

    path: str
    type: str  # "file", "directory", "symlink" or "other"
    size: int
    modified_at: str  # RFC 3339, milliseconds, UTC
    created_at: str
    owner: str
    group: str
    mode: int


class ReplaceCount(TypedDict):
    """How many occurrences one `replace` replaced in one file."""

    replacedCount: int


class UploadPlan(TypedDict):
    """Where an upload goes: a fresh `temp` file beside the expanded target `path`."""

    temp: str
    path: str


class WatchEvent(TypedDict):
    """A change under a watched directory: `type` is `create`, `modify`, `delete`, `move` (with
    `old_path`) or `overflow` (events were lost); paths are the sandbox's."""

    type: str
    path: str
    is_dir: bool
    old_path: NotRequired[str]


@dataclass(frozen=True)
class ResourceUsage:
    """Cumulative cpu time and current memory of a sandbox (or of the machine, when the backend
    cannot tell the sandbox's own): two readings give a cpu percentage."""

    cpu_seconds: float  # busy cpu-seconds so far
    cpu_count: float  # cores the sandbox may use (its quota, else the machine's)
    memory_total: int  # bytes: its limit, else the machine's memory
    memory_used: int  # bytes


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
class ImageRoot:
    """The root filesystem a sandbox runs in: an image's unpacked layers, lowest first.

    The backend stacks them, read-only and shared, under a writable layer of the sandbox's own;
    nothing of the host's filesystem is visible beside them but the spec's mounts. `user` is whom
    processes run as unless asked otherwise (the image's `User`: "name", "uid", "uid:gid" or
    "name:group"; "" is root), `working_dir` where the entrypoint starts ("" : `/`).
    """

    layers: tuple[Path, ...]
    user: str = ""
    working_dir: str = ""


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
    #: The image to run in; None runs the sandbox in a read-only view of the host's own tree
    #: (the warm pool's blank sandboxes, and backends' own tests).
    image: ImageRoot | None = None
    #: The network it gets, set up before its entrypoint starts (None: none).
    network: NetworkChoice | None = None


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
    #: A sentence for the sandbox's status about its network, and the address its resolv.conf should
    #: name as nameserver (None: no network).
    network_message: str = ""
    nameserver: str | None = None
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
        controlling_tty: bool = False,
    ) -> SandboxProcess:
        """Start `argv` inside the sandbox in a new session/process group.

        `env` is merged over the sandbox's base environment (`HOME`, `PATH`, `USER`, the spec's env).
        `cwd` is a path inside the sandbox.

        `stdin`/`stdout`/`stderr` are host file descriptors (e.g. pipe ends) handed to the child;
        the caller keeps ownership of its copies. None means /dev/null.

        With `controlling_tty`, `stdin` must be a terminal (a pty's follower end): the child, leader of
        its new session, makes it its controlling terminal (`TIOCSCTTY`), so job control, Ctrl-C and
        window-size signals work as in a login shell.
        """

    #: Files and directories, as the sandbox user in the sandbox's own view of paths.
    files: SandboxFiles
    #: Where bash sessions keep their state between runs.
    sessions: SandboxSessions

    def usage(self) -> ResourceUsage:
        """The sandbox's cpu and memory figures; this default gives the machine's."""
        from .machine import machine_usage

        return machine_usage()

    @abc.abstractmethod
    async def connect(self, port: int) -> socket.socket:
        """A connected TCP socket to 127.0.0.1:`port` in the sandbox's own network."""

    async def open_connection(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """`connect` wrapped as asyncio streams."""
        return await asyncio.open_connection(sock=await self.connect(port))


class SandboxFiles(abc.ABC):
    """File and directory operations inside one sandbox, as the sandbox user.

    Paths are the sandbox's: `$VAR`/`${VAR}` and a leading `~` expand as inside it, relative paths
    are relative to `/workspace`, and symlinks resolve in its own view. Failures: `SandboxOSError`
    (missing, denied, exists, ...) or `ValueError` (a bad argument, e.g. a body of the wrong shape).

        info = await handle.files.stat(["~/notes.txt"])      # {"~/notes.txt": FileInfo}
        await handle.files.make_dirs({"/workspace/out": {"mode": 755}})
    """

    @abc.abstractmethod
    async def expand(self, path: str, env: Mapping[str, str] | None = None) -> str:
        """`path` expanded and made absolute and normal (it need not exist)."""

    @abc.abstractmethod
    async def resolve_dir(self, path: str, env: Mapping[str, str] | None = None) -> str:
        """`path` expanded; it must be an existing directory (ENOENT / ENOTDIR otherwise)."""

    @abc.abstractmethod
    async def stat(self, paths: Sequence[str]) -> dict[str, FileInfo]:
        """FileInfo of each path (lstat), keyed by the path as given; any missing path fails all."""

    @abc.abstractmethod
    async def delete_files(self, paths: Sequence[str]) -> None:
        """Remove files and symlinks; missing ones are ignored, a directory is EISDIR."""

    @abc.abstractmethod
    async def set_permissions(self, items: JSONValue) -> None:
        """chmod, then chown: `{path: {mode, owner?, group?}}`."""

    @abc.abstractmethod
    async def move(self, items: JSONValue) -> None:
        """Move `[{src, dest}]`; dest parents are created, an existing dest is EEXIST."""

    @abc.abstractmethod
    async def search(self, path: str, pattern: str) -> list[FileInfo]:
        """Files under directory `path` whose name (or relative path, if it has a `/`) matches `pattern`."""

    @abc.abstractmethod
    async def replace(self, items: JSONValue) -> dict[str, ReplaceCount]:
        """`{path: {old, new}}`: replace every occurrence in each file, in place."""

    @abc.abstractmethod
    async def list_dir(self, path: str, depth: int) -> list[FileInfo]:
        """Entries under directory `path` up to `depth` levels, each parent before its children."""

    @abc.abstractmethod
    async def make_dirs(self, items: JSONValue) -> None:
        """`{path: {mode, owner?, group?}}`: `mkdir -p`, then chmod/chown the leaf."""

    @abc.abstractmethod
    async def delete_dirs(self, paths: Sequence[str]) -> None:
        """Remove directories recursively; missing ones are ignored, a plain file is ENOTDIR."""

    @abc.abstractmethod
    async def prepare_upload(self, path: str) -> UploadPlan:
        """Make the target's parents; name a fresh temp file beside it to write the upload to."""

    @abc.abstractmethod
    async def finish_upload(
        self, temp: str, path: str, *, mode: object = None, owner: object = None, group: object = None
    ) -> None:
        """Set the temp file's permissions and rename it over `path`."""

    @abc.abstractmethod
    async def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open `path` as the sandbox user; returns a host fd the caller must close."""

    async def watch(self, path: str, *, recursive: bool) -> AsyncIterator[WatchEvent]:
        """Watch directory `path` (and, `recursive`, every directory below it, also those made
        later). Returns once the watch is in place (a missing path is ENOENT, a file ENOTDIR) with
        the changes from then on, until the iterator is closed (`aclose`), which ends the watch.
        This default says the backend cannot (NotImplementedError)."""
        raise NotImplementedError("this sandbox backend cannot watch files")


class SandboxSessions(abc.ABC):
    """The files in which bash sessions keep their exported variables and cwd between runs."""

    @abc.abstractmethod
    async def create(self, session_id: str, cwd: str | None) -> str:
        """Make the session's state (and `cwd`, if given and missing); returns its path prefix
        inside the sandbox, for the session script to read and write."""

    @abc.abstractmethod
    async def drop(self, state_path: str) -> None:
        """Remove a session's state files."""


class Backend(abc.ABC):
    """Creates, freezes, thaws and destroys sandboxes."""

    #: Shown in sandbox status messages, e.g. "bubblewrap (commands may run as any uid/gid 0-65535; ...)".
    description: str
    #: Whether sandboxes run in the image their create names (`SandboxSpec.image`): the server
    #: then pulls it first. A backend without images gets `image=None` and runs its own tree.
    runs_images: bool = False

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
