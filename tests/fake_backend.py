"""A second, minimal backend behind `_backend/base.py`, for tests: it proves the API layer needs
nothing but the interface, and lets the execd and lifecycle apps be tested without namespaces.

Each sandbox is a directory, `<state_dir>/root`: a sandbox path `/workspace/a.txt` is the host file
`<root>/workspace/a.txt`, and no path leads out of it (a symlink that would is refused with ELOOP).
Commands are plain subprocesses of the test process, in their own session, with the cwd mapped
into the root; they see the host's file system, so tests give them relative paths. The file
operations are the agent's own (`_agent/fs.py`) run on the mapped paths, so both backends follow
one set of rules. Not isolation: never serve untrusted code with it.

    backend = FakeBackend()
    handle = await backend.create(SandboxSpec("sb-1", ["sleep", "infinity"], tmp_path / "sb-1"))
    await handle.files.make_dirs({"/workspace/out": {"mode": 755}})
    await backend.destroy(handle)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import termios
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from osbox.server._agent import fs
from osbox.server._backend.base import (
    Backend,
    BackendError,
    FileInfo,
    JSONValue,
    ReplaceCount,
    SandboxFiles,
    SandboxHandle,
    SandboxOSError,
    SandboxProcess,
    SandboxSessions,
    SandboxSpec,
    UploadPlan,
)

__all__ = ["FakeBackend", "FakeSandbox"]

T = TypeVar("T")
HOME = "/home/user"
SESSIONS_DIR = "/tmp/.osbox/sessions"


class _Root:
    """Maps sandbox paths into one host directory and back, refusing any way out of it."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = str(root)
        self.env = {"HOME": HOME, **env}

    def expand(self, path: str, env: Mapping[str, str] | None = None) -> str:
        """The sandbox path `path` expanded as inside the sandbox (see `fs.expand_path`)."""
        return fs.expand_path(path, {**self.env, **(env or {})})

    def host(self, path: str, env: Mapping[str, str] | None = None) -> str:
        """The host path of sandbox path `path`; ELOOP when a symlink would lead out of the root."""
        inside = self.expand(path, env)
        host = self.root + inside if inside != "/" else self.root
        real = os.path.realpath(host)
        if real != self.root and not real.startswith(self.root + "/"):
            raise SandboxOSError(errno.ELOOP, "a symlink leads out of the sandbox", inside)
        return host

    def inside(self, host: str) -> str:
        """The sandbox path of host path `host`."""
        return host[len(self.root) :] or "/" if host.startswith(self.root) else host

    def info(self, info: Any) -> FileInfo:
        """A FileInfo with its path made a sandbox path again."""
        return cast(FileInfo, {**info, "path": self.inside(info["path"])})

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """OS errors as the sandbox would report them: `SandboxOSError`, with sandbox paths."""
        try:
            yield
        except SandboxOSError:
            raise
        except OSError as exc:
            filename = self.inside(exc.filename) if isinstance(exc.filename, str) else None
            raise SandboxOSError(exc.errno or errno.EIO, exc.strerror or str(exc), filename) from None


class FakeFiles(SandboxFiles):
    """`SandboxFiles` over the agent's operations, on the paths mapped into the root."""

    def __init__(self, root: _Root) -> None:
        self._root = root

    def _run(self, work: Callable[[], T]) -> T:
        with self._root.errors():
            return work()

    def _keys(self, items: JSONValue) -> JSONValue:
        """`{path: spec}` with host paths (anything else is passed on, for the op to refuse)."""
        if not isinstance(items, dict):
            return items
        return {self._root.host(path): spec for path, spec in items.items()}

    async def expand(self, path: str, env: Mapping[str, str] | None = None) -> str:
        return self._run(lambda: self._root.expand(path, env))

    async def resolve_dir(self, path: str, env: Mapping[str, str] | None = None) -> str:
        return self._run(lambda: self._root.inside(fs.op_resolve_dir(self._root.host(path, env))))

    async def stat(self, paths: Sequence[str]) -> dict[str, FileInfo]:
        return self._run(lambda: {p: self._root.info(fs.file_info(self._root.host(p))) for p in paths})

    async def delete_files(self, paths: Sequence[str]) -> None:
        self._run(lambda: fs.op_delete_files([self._root.host(p) for p in paths]))

    async def set_permissions(self, items: JSONValue) -> None:
        self._run(lambda: fs.op_set_permissions(self._keys(items)))  # type: ignore[arg-type]

    async def move(self, items: JSONValue) -> None:
        def host_item(item: object) -> object:
            if (
                isinstance(item, dict)
                and isinstance(item.get("src"), str)
                and isinstance(item.get("dest"), str)
            ):
                return {**item, "src": self._root.host(item["src"]), "dest": self._root.host(item["dest"])}
            return item  # for the op to refuse

        def host_items() -> Any:
            return [host_item(item) for item in items] if isinstance(items, list) else items

        self._run(lambda: fs.op_move(host_items()))

    async def search(self, path: str, pattern: str) -> list[FileInfo]:
        found = self._run(lambda: fs.op_search(self._root.host(path), pattern))
        return [self._root.info(info) for info in found]

    async def replace(self, items: JSONValue) -> dict[str, ReplaceCount]:
        given = {self._root.host(path): path for path in items} if isinstance(items, dict) else {}
        counts = self._run(lambda: fs.op_replace(self._keys(items)))  # type: ignore[arg-type]
        return {given.get(key, key): cast(ReplaceCount, count) for key, count in counts.items()}

    async def list_dir(self, path: str, depth: int) -> list[FileInfo]:
        entries = self._run(lambda: fs.op_list_dir(self._root.host(path), depth))
        return [self._root.info(info) for info in entries]

    async def make_dirs(self, items: JSONValue) -> None:
        self._run(lambda: fs.op_make_dirs(self._keys(items)))  # type: ignore[arg-type]

    async def delete_dirs(self, paths: Sequence[str]) -> None:
        if any(self._root.expand(p) == "/" for p in paths):
            raise ValueError("refusing to delete /")
        self._run(lambda: fs.op_delete_dirs([self._root.host(p) for p in paths]))

    async def prepare_upload(self, path: str) -> UploadPlan:
        plan = self._run(lambda: fs.op_prepare_upload(self._root.host(path)))
        return {"temp": self._root.inside(plan["temp"]), "path": self._root.inside(plan["path"])}

    async def finish_upload(
        self, temp: str, path: str, *, mode: object = None, owner: object = None, group: object = None
    ) -> None:
        host_temp, host_path = self._root.host(temp), self._root.host(path)
        self._run(lambda: fs.op_finish_upload(host_temp, host_path, mode, owner, group))  # type: ignore[arg-type]

    async def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return self._run(lambda: os.open(self._root.host(path), flags | os.O_CLOEXEC | os.O_NOCTTY, mode))


class FakeSessions(SandboxSessions):
    """Session state under the root's `/tmp/.osbox/sessions/`; the state path handed out is a host
    path, since session runs are host processes."""

    def __init__(self, root: _Root) -> None:
        self._root = root

    async def create(self, session_id: str, cwd: str | None) -> str:
        with self._root.errors():
            start = self._root.host(cwd or "/workspace")
            os.makedirs(start, exist_ok=True)
            state = os.path.join(self._root.host(SESSIONS_DIR), session_id)
            os.makedirs(os.path.dirname(state), mode=0o700, exist_ok=True)
            with open(state + ".cwd", "w", encoding="utf-8") as cwd_file:  # noqa: ASYNC230 (tiny, local)
                cwd_file.write(start + "\n")
        return state

    async def drop(self, state_path: str) -> None:
        for suffix in (".cwd", ".env"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(state_path + suffix)


class FakeProcess(SandboxProcess):
    """A plain subprocess in its own session (so its process group is its pid)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def wait(self) -> int:
        return await self._process.wait()

    @property
    def exited(self) -> bool:
        """Whether it has exited and been reaped."""
        return self._process.returncode is not None

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def _take_terminal() -> None:
    """In the child (a new session's leader): make stdin, a terminal, the controlling one."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class FakeSandbox(SandboxHandle):
    """A directory and the processes started in it."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.sandbox_id = spec.sandbox_id
        self.spec = spec
        self.limits_enforced = False
        self.limits_message = "the fake test backend enforces no limits"
        self.log_path = spec.state_dir / "entrypoint.log"
        self.host_uids = range(os.getuid(), os.getuid() + 1)
        self.root = spec.state_dir / "root"
        for directory in ("workspace", "tmp", HOME.lstrip("/")):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self._paths = _Root(self.root, spec.env)
        self.files = FakeFiles(self._paths)
        self.sessions = FakeSessions(self._paths)
        self.processes: list[FakeProcess] = []
        self.destroyed = False

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
    ) -> FakeProcess:
        if self.destroyed:
            raise BackendError(f"sandbox {self.sandbox_id} was destroyed")
        with self._paths.errors():
            host_cwd = self._paths.host(cwd)
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=host_cwd,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self._paths.env, **env},
                stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
                stderr=stderr if stderr is not None else asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_take_terminal if controlling_tty else None,
            )
        started = FakeProcess(process)
        self.processes.append(started)
        return started

    async def connect(self, port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port))


class FakeBackend(Backend):
    """Sandboxes as directories and plain subprocesses (see the module docstring)."""

    description = "the fake test backend (no isolation)"

    def __init__(self) -> None:
        self.sandboxes: dict[str, FakeSandbox] = {}

    async def create(self, spec: SandboxSpec) -> FakeSandbox:
        sandbox = FakeSandbox(spec)
        log = os.open(sandbox.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            await sandbox.spawn(spec.entrypoint, env={}, cwd="/workspace", stdout=log, stderr=log)
        finally:
            os.close(log)
        self.sandboxes[spec.sandbox_id] = sandbox
        return sandbox

    async def pause(self, handle: SandboxHandle) -> None:
        self._signal_all(handle, signal.SIGSTOP)

    async def resume(self, handle: SandboxHandle) -> None:
        self._signal_all(handle, signal.SIGCONT)

    async def destroy(self, handle: SandboxHandle) -> None:
        sandbox = _own(handle)
        if sandbox.destroyed:
            return
        sandbox.destroyed = True
        self._signal_all(sandbox, signal.SIGKILL)
        await asyncio.gather(*(process.wait() for process in sandbox.processes))
        self.sandboxes.pop(sandbox.sandbox_id, None)

    async def adopt(self, spec: SandboxSpec) -> SandboxHandle | None:
        return None  # nothing outlives the test process that started it

    def is_alive(self, handle: SandboxHandle) -> bool:
        return not _own(handle).destroyed

    async def close(self) -> None:
        for sandbox in list(self.sandboxes.values()):
            await self.destroy(sandbox)

    @staticmethod
    def _signal_all(handle: SandboxHandle, signum: int) -> None:
        for process in _own(handle).processes:
            process.signal_group(signum)


def _own(handle: SandboxHandle) -> FakeSandbox:
    if not isinstance(handle, FakeSandbox):
        raise BackendError(f"not a sandbox of this backend: {handle!r}")
    return handle
