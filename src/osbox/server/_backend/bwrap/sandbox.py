"""A live bubblewrap sandbox (`BwrapSandbox`) and the processes started in it (`BwrapProcess`).

Pids: `SandboxProcess.pid` is the host pid. `signal_group` signals the host process group while
the group leader lives, and goes through the agent (pgid as seen inside) after it has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ..._agent.protocol import AgentError
from ..base import BackendError, ImageRoot, ResourceUsage, SandboxHandle, SandboxProcess, SandboxSpec
from . import layout as lay
from .agent_client import AgentConnection, close_fds, request
from .agent_files import AgentFiles, AgentSessions
from .cgroups import SandboxCgroup
from .idranges import IdRange
from .procs import host_pid_of_pidfd, pidfd_exited
from .usage import cgroup_usage

__all__ = ["BwrapProcess", "BwrapSandbox"]


class BwrapProcess(SandboxProcess):
    """A process started by the agent; `pid` is its host pid (-1 if it was gone at once)."""

    def __init__(self, sandbox: BwrapSandbox, conn: AgentConnection, pidfd: int, ns_pid: int) -> None:
        self._sandbox = sandbox
        self._conn = conn
        self._pidfd = pidfd
        self.ns_pid = ns_pid  # the pid inside the sandbox
        try:
            self.pid = host_pid_of_pidfd(pidfd)
        except (OSError, ValueError):
            self.pid = -1
        self._exit_task: asyncio.Future[int] | None = None
        self._exit_code: int | None = None

    async def wait(self) -> int:
        """Wait for exit: the exit code, or -N when killed by signal N (-9 if the sandbox died)."""
        if self._exit_task is None:
            self._exit_task = asyncio.ensure_future(self._read_exit())
        return await asyncio.shield(self._exit_task)

    async def _read_exit(self) -> int:
        code = -signal.SIGKILL
        try:
            message, fds = await self._conn.receive()
            close_fds(fds)
            code = int(message["exit"])
        except (EOFError, OSError, AgentError, KeyError, ValueError, TypeError):
            pass  # the agent died with the sandbox: the process was killed with it
        finally:
            self.close()
        self._exit_code = code
        return code

    def signal_group(self, signum: int) -> None:
        """Signal the process group (no error if it is gone)."""
        if self._exit_code is None and self.pid > 0 and self._pidfd >= 0 and not pidfd_exited(self._pidfd):
            # The leader lives, so its host pid is still its group's id: signal directly.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            return
        # The leader exited; members may remain. Its host pid may be free for reuse by now, so ask
        # the agent, which only sees the sandbox's own processes.
        self._sandbox._kill_group_soon(self.ns_pid, signum)

    def close(self) -> None:
        """Release the connection and pidfd (the process itself is not touched)."""
        self._conn.close()
        if self._pidfd >= 0:
            close_fds([self._pidfd])
            self._pidfd = -1


class BwrapSandbox(SandboxHandle):
    """A live bubblewrap sandbox."""

    #: The credential proxy's CA (PEM) that its trust store gets before the entrypoint (None: none).
    trusted_ca: str | None = None

    def __init__(
        self,
        spec: SandboxSpec,
        *,
        uid: int,
        gid: int,
        agent_pid: int,
        agent_pidfd: int,
        bwrap: subprocess.Popen[bytes] | None,
        bwrap_pidfd: int,
        cgroup: SandboxCgroup | None,
        limits_enforced: bool,
        limits_message: str,
        ids: IdRange | None = None,
        ids_mapped: bool = False,
        disk_message: str = "",
    ) -> None:
        self.sandbox_id = spec.sandbox_id
        self.spec = spec
        self.layout = lay.StateLayout(spec.state_dir)
        self.log_path = self.layout.entrypoint_log
        self.limits_enforced = limits_enforced
        self.limits_message = limits_message
        self.disk_message = disk_message
        self.host_uid = uid  # the host uid/gid of the sandbox user (1000 inside)
        self.host_gid = gid
        #: The host ids reserved for this sandbox (server is root), and whether all of them are
        #: mapped inside (sandbox ids 0..65535) or only the sandbox user (single-id set-up).
        self.ids = ids
        self.ids_mapped = ids_mapped
        self.host_uids = range(ids.base, ids.base + ids.size) if ids is not None else range(uid, uid + 1)
        self.agent_pid = agent_pid  # host pid of the agent (PID 1 inside)
        self._agent_pidfd = agent_pidfd
        self._bwrap = bwrap  # None when adopted (it is no longer our child)
        self._bwrap_pidfd = bwrap_pidfd
        self.cgroup = cgroup
        self.destroyed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Why there is no cgroup (when `cgroup` is None).
        self.cgroup_problem = ""
        #: Started ahead of time by the warm pool, before its owner was known.
        self.from_pool = False
        #: The key of the network made ahead for it in the pool (`network.prepare`), until claimed.
        self.network_ahead: str | None = None
        #: The image it was started in (a pre-started one serves creates of that image only).
        self.image: ImageRoot | None = spec.image
        self.files = AgentFiles(self.call, self.open_file, self.open_stream)
        self.sessions = AgentSessions(self.call)

    def reassign(self, spec: SandboxSpec) -> None:
        """Make a pre-started sandbox `spec`'s: its id and its state dir (already moved there)."""
        self.sandbox_id = spec.sandbox_id
        self.spec = spec
        self.layout = lay.StateLayout(spec.state_dir)
        self.log_path = self.layout.entrypoint_log

    def oom_kills(self) -> int:
        """The OOM kills its memory cgroup counted (0 without one)."""
        return self.cgroup.oom_kills() if self.cgroup is not None and not self.destroyed else 0

    def usage(self) -> ResourceUsage:
        """Its cgroup's figures when its limits are enforced, else the machine's."""
        return cgroup_usage(self.cgroup if self.limits_enforced else None)

    def __repr__(self) -> str:
        return f"<BwrapSandbox {self.sandbox_id} agent_pid={self.agent_pid}>"

    async def _request(
        self, message: dict[str, Any], fds: Sequence[int] = (), *, keep: bool = False
    ) -> tuple[Any, list[int], AgentConnection | None]:
        if self.destroyed:
            raise BackendError(f"sandbox {self.sandbox_id} was destroyed")
        return await request(self.layout.socket, message, fds, keep=keep)

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
    ) -> BwrapProcess:
        """Start `argv` in a new session inside the sandbox (see `SandboxHandle.spawn`)."""
        stdio = (stdin, stdout, stderr)
        message = {
            "op": "spawn",
            "argv": list(argv),
            "env": dict(env),
            "cwd": cwd,
            "stdio": [None if fd is None else "fd" for fd in stdio],
            "uid": uid,
            "gid": gid,
        }
        if controlling_tty:
            message["controlling_tty"] = True
        result, fds, conn = await self._request(message, [fd for fd in stdio if fd is not None], keep=True)
        assert conn is not None
        return BwrapProcess(self, conn, fds[0], int(result["pid"]))

    async def call(self, op: str, **args: Any) -> Any:
        """Run the agent's file-system op `op` (`_agent/fs.py`) inside the sandbox; its JSON result.

        What `files` and `sessions` are built on; raises `SandboxOSError` or `ValueError`."""
        result, _fds, _conn = await self._request({"op": "call", "name": op, "args": args})
        return result

    async def open_stream(self, message: dict[str, Any]) -> tuple[Any, AgentConnection]:
        """Send a request whose replies stream on (`watch`): its first result and the connection."""
        result, _fds, conn = await self._request(message, keep=True)
        assert conn is not None
        return result, conn

    async def open_file(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open `path` as the sandbox user, in the sandbox's view; returns a host fd."""
        _result, fds, _conn = await self._request({"op": "open", "path": path, "flags": flags, "mode": mode})
        return fds[0]

    async def connect(self, port: int) -> socket.socket:
        """A connected (blocking) TCP socket to 127.0.0.1:`port` inside the sandbox."""
        _result, fds, _conn = await self._request({"op": "connect", "port": port})
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(True)
        return sock

    async def kill_group(self, pgid: int, signum: int) -> bool:
        """Signal process group `pgid` as numbered inside the sandbox; False if there is none."""
        result, _fds, _conn = await self._request({"op": "kill", "pgid": pgid, "signal": signum})
        return bool(result)

    def _kill_group_soon(self, pgid: int, signum: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.destroyed:
            return

        async def kill() -> None:
            with contextlib.suppress(BackendError, ValueError, OSError):
                await self.kill_group(pgid, signum)

        task = loop.create_task(kill())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
