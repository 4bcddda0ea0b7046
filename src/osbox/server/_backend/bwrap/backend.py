"""The Linux backend: one bubblewrap sandbox per `SandboxSpec`, the agent as its PID 1.

    backend = BwrapBackend(data_dir)
    handle = await backend.create(spec)
    proc = await handle.spawn(["sh", "-c", "echo hi"], env={}, cwd="/workspace", stdout=w)
    code = await proc.wait()
    await backend.destroy(handle)

Identity: inside, the sandbox user is `sandbox` (1000:1000). When the server runs as root, each
sandbox gets a range of 65536 unprivileged host ids of its own (see `idranges`): bwrap starts as
host id `base + 1000` and waits (`--userns-block-fd`) until the server has mapped sandbox ids
0..65535 to `base ..` in its user namespace; the agent keeps the capabilities to run commands as
any of them and drops them for every command (see `_agent/identity.py`). Its `fs/` dirs are chowned
into the range. Should the kernel refuse the maps, the range is still reserved but only the
sandbox user is mapped (bwrap maps it itself), as when the server is not root, where sandboxes run
as the server's own user. `description` says which applies.

Lifetime: sandboxes outlive the server process (to be re-adopted), unless the backend is made with
`die_with_server=True` (ephemeral servers): then each agent watches the process lifeline (see
`lifeline`) and ends its sandbox when the server's process ends, however it ends.

Pids and signals: see `sandbox`.

Restart: the agent keeps listening on `state_dir/run/agent.sock` (a socket the server created and
handed over); `run/agent.json` records pids, start times, uid and cgroups, so `adopt` can check
the tree is the same one and reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from ..._logtail import tail
from ...egress.networks import SandboxNetworks
from ..base import Backend, BackendError, ImageRoot, SandboxHandle, SandboxSpec
from . import disk, network
from . import layout as lay
from .agent_client import close_fds, request
from .agent_code import agent_files
from .cgroups import CgroupError, CgroupLayout, Limits, SandboxCgroup
from .host import data_fd, id_ranges_unavailable, memfd, open_mount_source, reopen, sandbox_python, which
from .idranges import (
    UID_BASE,
    IdMapsRefused,
    IdRange,
    IdRangeRegistry,
    map_ids,
    owners_into,
    recorded_ids,
    write_id_maps,
)
from .lifeline import lifeline_fd
from .pool import WarmPool
from .procs import (
    host_pid_of_pidfd,
    kill_tree,
    pidfd_exited,
    pidfd_if_same,
    protect_from_oom_killer,
    read_child_pid,
)
from .rootfs import ImageRootLayout, mount_image_root
from .sandbox import BwrapProcess, BwrapSandbox
from .seccomp import filter_for_host
from .statedir import (
    bind_listener,
    forget_run_files,
    make_traversable,
    prepare_state_dir,
    read_record,
    write_record,
)

__all__ = ["UID_BASE", "BwrapBackend", "BwrapProcess", "BwrapSandbox"]

_READY_TIMEOUT_S = 15.0
_AGENT_DIR = Path(__file__).resolve().parent.parent.parent / "_agent"
#: Pre-started sandboxes all get this hostname; a spec asking for another one starts its own.
_POOL_HOSTNAME = SandboxSpec.__dataclass_fields__["hostname"].default
_log = logging.getLogger("osbox.server.backend")


class BwrapBackend(Backend):
    """Sandboxes as bubblewrap process trees with cgroup limits (see the module docstring)."""

    runs_images = True

    def __init__(
        self,
        data_dir: Path,
        *,
        bwrap: str = "bwrap",
        python: str | None = None,
        pool_size: int = 0,
        die_with_server: bool = False,
        id_registry: IdRangeRegistry | None = None,
        pool_disk_bytes: int | None = None,
        networks: SandboxNetworks | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            make_traversable(self.data_dir)
        self._bwrap = which(bwrap)
        self._python = python or sandbox_python(self._as_root)
        self._setpriv = shutil.which("setpriv") if self._as_root else None
        self._cgroups = CgroupLayout.detect()
        #: Why disk quotas cannot be enforced here ("" when they can).
        self._disk_problem = disk.unavailable_reason()
        self._entries = lay.root_entries()
        self._lifeline = lifeline_fd() if die_with_server else None
        self._registry = (id_registry or IdRangeRegistry()) if self._as_root else None
        #: Why sandboxes get one id only ("" when they get a range).
        self._single_id_reason = (
            id_ranges_unavailable(self._bwrap, self._python) if self._as_root else "the server is not root"
        )
        program, self._seccomp_status = filter_for_host()
        self._seccomp = memfd("seccomp", program) if program is not None else None
        self._describe()
        files, self._agent_script = agent_files(self._python, _AGENT_DIR, lay.AGENT_DIR)
        self._memfds = {name: memfd(name, data) for name, data in files.items()}
        passwd, group = lay.sandbox_passwd()
        self._etc = {
            "/etc/passwd": memfd("passwd", passwd.encode()),
            "/etc/group": memfd("group", group.encode()),
        }
        self._pool_dir = self.data_dir / "pool"
        #: The disk quota of pre-started sandboxes (the server's default): other sizes start their own.
        self._pool_disk_bytes = pool_disk_bytes
        #: The image pre-started sandboxes run: the last one a create asked for (None: the host's tree).
        self._pool_image: ImageRoot | None = None
        self._networks = networks
        self._pool: WarmPool[BwrapSandbox] = WarmPool(
            pool_size,
            launch=self._launch_blank,
            discard=self._discard_blank,
            usable=lambda handle: handle.image == self._pool_image and self.is_alive(handle),
        )

    def _describe(self) -> None:
        ids = (
            f"every command runs as uid/gid 1000 ({self._single_id_reason})"
            if self._single_id_reason
            else "commands may run as any uid/gid 0-65535"
        )
        self.description = f"bubblewrap ({ids}; {self._seccomp_status})"

    # --- warm pool ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove what a crashed server's pool left, then start filling the warm pool."""
        if self._registry is not None:
            await asyncio.to_thread(self._registry.sweep)
        await self._sweep_pool_dir()
        self._pool.start()

    async def _sweep_pool_dir(self) -> None:
        """Destroy every pre-started sandbox whose state dir is still under `pool/`, then the dir.

        A pool sandbox lives in `pool/<token>` until a create renames it to its owner's state dir,
        so what is left there belongs to nobody: the pool of a server that was killed, or one taken
        by a create that failed before it was handed over. Run at start and at close, so no pool
        sandbox outlives the server that made it, however that server ended.
        """
        if not self._pool_dir.is_dir():
            return
        for entry in sorted(self._pool_dir.iterdir()):
            spec = SandboxSpec(sandbox_id=f"pool-{entry.name}", entrypoint=[], state_dir=entry)
            try:
                leftover = await self.adopt(spec)  # None: it was cleaned up already
                if leftover is not None:
                    await self.destroy(leftover)
            except Exception as exc:  # one broken leftover must not keep the others
                _log.warning("removing the pre-started sandbox %s failed: %s", entry.name, exc)
            await self.remove_state(entry)

    @property
    def pooled(self) -> int:
        """How many pre-started sandboxes are ready to be taken now."""
        return len(self._pool)

    async def _launch_blank(self) -> BwrapSandbox:
        """A sandbox for the pool: its own uid, state dir and cgroup; no limits, no entrypoint."""
        token = secrets.token_hex(8)
        spec = SandboxSpec(
            sandbox_id=f"pool-{token}",
            entrypoint=[],
            state_dir=self._pool_dir / token,
            disk_bytes=self._pool_disk_bytes,
            image=self._pool_image,
        )
        handle = await self._launch(spec)
        handle.from_pool = True
        try:
            await network.prepare(self._networks, handle)  # its link made ahead (where there are networks)
        except BaseException:  # cancelled: the pool is closing
            await self._discard_blank(handle)
            raise
        return handle

    async def _discard_blank(self, handle: BwrapSandbox) -> None:
        await self.destroy(handle)
        await self.remove_state(handle.layout.state_dir)

    async def _assign(self, pooled: BwrapSandbox, spec: SandboxSpec) -> BwrapSandbox | None:
        """Give a pre-started sandbox to `spec`: limits, state dir, environment, entrypoint.

        Returns None (having discarded it) when it cannot take the spec's limits or state dir;
        the caller then starts a sandbox of its own.
        """
        limits = _limits(spec)
        try:
            if pooled.cgroup is not None:
                self._cgroups.limit(pooled.cgroup, limits)
            os.rename(pooled.layout.state_dir, spec.state_dir)  # replaces the empty dir made for it
        except (CgroupError, OSError) as exc:
            _log.warning("a pre-started sandbox could not be used for %s: %s", spec.sandbox_id, exc)
            await self._discard_blank(pooled)
            return None
        pooled.reassign(spec)
        pooled.limits_enforced, pooled.limits_message = _limit_status(
            pooled.cgroup, pooled.cgroup_problem, limits
        )
        try:
            assert pooled._bwrap is not None  # launched by this backend, not re-adopted
            write_record(pooled, pooled._bwrap.pid)  # under its owner's id and limits now
        except OSError as exc:
            await self.destroy(pooled)
            raise _start_failure(spec, pooled.layout, exc) from None
        await self._start_entrypoint(pooled, spec, base_env=dict(spec.env))
        return pooled

    # --- create -----------------------------------------------------------------------------------

    def _reserve_ids(self) -> tuple[IdRange | None, int, int]:
        """(the sandbox's host id range or None when not root, host uid and gid of its user)."""
        if self._registry is None:
            return None, os.getuid(), os.getgid()
        ids = self._registry.reserve()
        return ids, ids.host_id(lay.SANDBOX_UID), ids.host_id(lay.SANDBOX_GID)

    def _release_ids(self, ids: IdRange | None, agent_pid: int = 0) -> None:
        if ids is not None and self._registry is not None:
            self._registry.release(ids, [agent_pid] if agent_pid > 0 else [])

    def _make_cgroup(self, spec: SandboxSpec) -> tuple[SandboxCgroup | None, str]:
        """The sandbox's cgroup with its limits applied, or None and why there is none."""
        try:
            return self._cgroups.create(_cgroup_name(spec.sandbox_id), _limits(spec)), ""
        except CgroupError as exc:
            return None, str(exc)

    async def create(self, spec: SandboxSpec) -> BwrapSandbox:
        """Start the sandbox (or take a pre-started one from the warm pool) and its entrypoint.

        Whatever fails, and however (a bug included), nothing started for it keeps running: the
        pre-started sandbox it took and the one it launched are destroyed before the error goes on.
        """
        poolable = self._poolable(spec)
        if poolable and spec.image != self._pool_image:
            # Pre-start sandboxes of the image asked for last: a second create of it takes one.
            self._pool_image = spec.image
            self._pool.flush()
        pooled = await self._pool.take_or_wait() if poolable else None
        launched: BwrapSandbox | None = None
        early = network.EarlyNetwork(self._networks, spec)  # a start of its own sets it up beside
        try:
            handle = await self._assign(pooled, spec) if pooled is not None else None
            if handle is None:
                handle = launched = await self._launch(spec, early=early)
                await self._start_entrypoint(launched, spec, base_env=None, early=early)
            return handle
        except BaseException:
            await early.abandon()
            for sandbox in (pooled, launched):
                if sandbox is not None:
                    await self._discard_failed(sandbox)
            raise
        finally:
            if pooled is not None:
                self._pool.refill()

    async def _discard_failed(self, sandbox: BwrapSandbox) -> None:
        """Destroy a sandbox whose create failed (again: `destroy` is idempotent); a pre-started one
        still under `pool/` loses its dir too, while an owner's state dir is kept, as for any failure."""
        try:
            await self.destroy(sandbox)
        except Exception as exc:
            _log.warning("cleaning up after the failed start of %s: %s", sandbox.sandbox_id, exc)
        if sandbox.layout.state_dir.parent == self._pool_dir:
            await self.remove_state(sandbox.layout.state_dir)

    def _poolable(self, spec: SandboxSpec) -> bool:
        """Whether a pre-started sandbox can serve `spec`: no mounts, the default hostname, disk
        and tmpfs sizes, nothing seeded (limits are applied to a pre-started one on assignment)."""
        if spec.mounts or spec.hostname != _POOL_HOSTNAME or spec.disk_bytes != self._pool_disk_bytes:
            return False
        if lay.tmpfs_sizes(spec.memory_bytes) != lay.tmpfs_sizes(None):
            return False
        try:
            return not os.listdir(spec.state_dir)
        except FileNotFoundError:
            return True
        except OSError:
            return False

    async def _start_entrypoint(
        self,
        handle: BwrapSandbox,
        spec: SandboxSpec,
        *,
        base_env: dict[str, str] | None,
        early: network.EarlyNetwork | None = None,
    ) -> None:
        """Start the sandbox's entrypoint (with `base_env` added to its environment) once its network
        is in force (`early`: the one set up beside its start); destroys the sandbox on failure."""
        cwd = lay.WORKSPACE if spec.image is None else spec.image.working_dir or "/"
        message: dict[str, Any] = {"op": "start", "argv": list(spec.entrypoint), "cwd": cwd}
        if base_env is not None:
            message["base_env"] = base_env
        try:
            await network.connect(
                self._networks, handle, spec.network, trust_store=spec.image is not None, early=early
            )
            if spec.image is not None and handle.nameserver:
                message["etc"] = {"/etc/resolv.conf": lay.resolv_conf(handle.nameserver)}
            if handle.trusted_ca is not None:
                message["trusted_ca"] = handle.trusted_ca
            await request(handle.layout.socket, message)
        except BaseException as exc:
            await self.destroy(handle)
            if isinstance(exc, (BackendError, OSError, ValueError)):
                raise _start_failure(spec, handle.layout, exc) from None
            raise

    async def _launch(self, spec: SandboxSpec, *, early: network.EarlyNetwork | None = None) -> BwrapSandbox:
        """Start bwrap and the agent, inside the sandbox's cgroup; returns once the agent answers.

        The entrypoint is not started (see `_start_entrypoint`). `early` starts setting the sandbox's
        network up as soon as its namespace exists (and is abandoned should the start fail).
        """
        layout = lay.StateLayout(spec.state_dir)
        if spec.image is not None and (self._registry is None or self._single_id_reason):
            raise BackendError(
                "running an image needs a range of ids per sandbox, so that the image's own users "
                f"exist in it, and here there is none ({self._single_id_reason})"
            )
        ids, uid, gid = self._reserve_ids()
        mapped = ids is not None and not self._single_id_reason
        try:
            disk_message = await self._provision_disk(spec)
            owners = owners_into(ids, mapped, lay.SANDBOX_UID) if ids is not None else None
            root = (ids.host_id(0), ids.host_id(0)) if ids is not None and mapped else None
            prepare_state_dir(
                layout, self.data_dir, owners, group=gid if ids is not None else None, root=root
            )
            if spec.image is not None and root is not None:
                ImageRootLayout(spec.state_dir).prepare(len(spec.image.layers), root)
            cgroup, cgroup_problem = self._make_cgroup(spec)
        except BaseException:
            self._release_ids(ids)
            raise
        bwrap: subprocess.Popen[bytes] | None = None
        info_read = block_write = child_pidfd = bwrap_pidfd = -1
        child_pid = 0
        try:
            bwrap, info_read, block_write = self._start_bwrap(spec, layout, uid, gid, cgroup, mapped)
            bwrap_pidfd = os.pidfd_open(bwrap.pid)
            child_pid = await read_child_pid(info_read, _READY_TIMEOUT_S)
            if child_pid > 0:  # a pidfd, so that a failed start can kill it without pid-reuse risk
                child_pidfd = os.pidfd_open(child_pid)
                if early is not None:
                    early.start(child_pid)  # its namespace exists: the network is made while it starts
            if mapped and ids is not None and child_pid > 0 and spec.image is not None:
                await asyncio.to_thread(self._map_and_mount, child_pid, ids, block_write, spec)
            elif mapped and ids is not None and child_pid > 0:
                map_ids(child_pid, ids, block_write)
            if ids is not None and self._registry is not None and child_pid > 0:
                self._registry.hold(ids, child_pid)  # while bwrap sets up (this server holds it too)
            agent_pidfd, agent_pid = await self._wait_ready(layout, child_pid, cgroup)
        except BaseException as exc:
            if child_pidfd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(child_pidfd, signal.SIGKILL)  # takes its PID namespace along
            close_fds([fd for fd in (info_read, block_write, child_pidfd, bwrap_pidfd) if fd >= 0])
            if early is not None:
                await early.abandon()
            await self._abort_launch(bwrap, cgroup, layout, ids, child_pid)
            if isinstance(exc, IdMapsRefused):
                self._single_id_reason = f"the kernel refused to map a range of ids: {exc}"
                self._describe()
                _log.warning("sandboxes get one id only from now on: %s", self._single_id_reason)
                return await self._launch(spec, early=early)
            if isinstance(exc, (BackendError, OSError, ValueError, TimeoutError)):
                raise _start_failure(spec, layout, exc) from None
            raise
        close_fds([info_read, block_write, child_pidfd])
        enforced, message = _limit_status(cgroup, cgroup_problem, _limits(spec))
        handle = BwrapSandbox(
            spec,
            uid=uid,
            gid=gid,
            agent_pid=agent_pid,
            agent_pidfd=agent_pidfd,
            bwrap=bwrap,
            bwrap_pidfd=bwrap_pidfd,
            cgroup=cgroup,
            limits_enforced=enforced,
            limits_message=message,
            ids=ids,
            ids_mapped=mapped,
            disk_message=disk_message,
        )
        handle.cgroup_problem = cgroup_problem
        try:
            write_record(handle, bwrap.pid)  # from now on a restarted server can find it
        except OSError as exc:
            await self.destroy(handle)
            raise _start_failure(spec, layout, exc) from None
        return handle

    @staticmethod
    def _map_and_mount(child_pid: int, ids: IdRange, block_write: int, spec: SandboxSpec) -> None:
        """Map bwrap's waiting child's ids, mount its image root in its mount namespace (where the
        maps shift the layers' ids, see `rootfs`), then let bwrap go on."""
        assert spec.image is not None
        try:
            write_id_maps(child_pid, ids)
        except OSError as exc:
            raise IdMapsRefused(exc.strerror or str(exc)) from None
        mount_image_root(child_pid, spec.image.layers, ImageRootLayout(spec.state_dir))
        os.write(block_write, b"1")

    async def _provision_disk(self, spec: SandboxSpec) -> str:
        """Put the sandbox's writable dirs on a file system of its quota (see `disk`); returns
        what its status must say ("" when the quota is enforced or there is none)."""
        if spec.disk_bytes is None:
            return ""
        problem = self._disk_problem
        if not problem:
            try:
                await asyncio.to_thread(disk.provision, spec.state_dir, spec.disk_bytes)
                return ""
            except disk.DiskError as exc:
                problem = str(exc)
                _log.warning("sandbox %s runs without its disk quota: %s", spec.sandbox_id, problem)
        return f"The disk quota (ephemeral-storage) is not enforced: {problem}."

    async def _wait_ready(
        self, layout: lay.StateLayout, child_pid: int, cgroup: SandboxCgroup | None
    ) -> tuple[int, int]:
        """Wait for the agent's answer; returns its (pidfd, host pid), inside the cgroup.

        Everything in the sandbox descends from the agent (`child_pid`, as bwrap reported it),
        which forks nothing before `start`, so moving the agent alone is enough. A move into a v1
        cgroup waits for an RCU grace period (~10 ms), so it runs in a thread while the agent's
        Python starts up.
        """
        loop = asyncio.get_running_loop()
        moved: asyncio.Future[None] | None = None
        if cgroup is not None and child_pid > 0:
            moved = loop.run_in_executor(None, cgroup.add, child_pid)
        try:
            _info, fds, _ = await asyncio.wait_for(request(layout.socket, {"op": "ping"}), _READY_TIMEOUT_S)
        finally:
            if moved is not None:
                await moved
        agent_pid = host_pid_of_pidfd(fds[0])
        if cgroup is not None and not cgroup.contains(agent_pid):
            await loop.run_in_executor(None, cgroup.add, agent_pid)
        protect_from_oom_killer(agent_pid)
        return fds[0], agent_pid

    def _start_bwrap(
        self,
        spec: SandboxSpec,
        layout: lay.StateLayout,
        uid: int,
        gid: int,
        cgroup: SandboxCgroup | None,
        map_range: bool,
    ) -> tuple[subprocess.Popen[bytes], int, int]:
        """Start bwrap; returns it, the read end of its info pipe and (with `map_range`, else -1)
        the write end of the pipe it waits on until the server has mapped its user namespace."""
        opened: list[int] = []

        def keep(fd: int) -> int:
            opened.append(fd)
            return fd

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            bind_listener(listener, layout.socket)
            listener.listen(128)
            path_flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            log_flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            mounts = []
            for mount in spec.mounts:
                try:
                    mounts.append(
                        (
                            keep(open_mount_source(mount)),
                            mount.sandbox_path,
                            mount.read_only,
                        )
                    )
                except OSError as exc:
                    raise BackendError(f"cannot mount {mount.host_path}: {exc.strerror}") from None
            info_read, info_write = os.pipe2(os.O_CLOEXEC)
            opened.append(info_write)
            block_read, block_write = os.pipe2(os.O_CLOEXEC) if map_range else (-1, -1)
            if map_range:
                opened.append(block_read)
            image = spec.image
            fds = lay.BwrapFds(
                info=info_write,
                workspace=None if image else keep(os.open(layout.workspace, path_flags)),
                tmp=None if image else keep(os.open(layout.tmp, path_flags)),
                home=None if image else keep(os.open(layout.home, path_flags)),
                listen=listener.fileno(),
                log=keep(os.open(layout.entrypoint_log, log_flags, 0o600)),
                agent_files={name: keep(reopen(fd)) for name, fd in self._memfds.items()},
                etc_files={path: keep(reopen(fd)) for path, fd in self._etc.items()},
                mounts=mounts,
                userns_block=block_read if map_range else None,
                lifeline=self._lifeline,
                seccomp=None if self._seccomp is None else keep(reopen(self._seccomp)),
            )
            hidden = lay.hidden_paths([self.data_dir, spec.state_dir.resolve()], same_user=not self._as_root)
            argv = lay.bwrap_argv(
                bwrap=self._bwrap,
                python=self._python,
                agent_script=self._agent_script,
                hostname=spec.hostname,
                fds=fds,
                entries=self._entries,
                hidden=hidden,
                cgroup_dirs=list(cgroup.paths.values()) if cgroup is not None else [],
                tmpfs=lay.tmpfs_sizes(spec.memory_bytes),
                image=None
                if image is None
                else lay.ImageView(
                    source=str(ImageRootLayout(spec.state_dir).root),
                    user=image.user,
                    etc_files={
                        path: keep(data_fd(path, content.encode()))
                        for path, content in lay.image_etc_files(spec.hostname).items()
                    },
                ),
            )
            agent_log = keep(os.open(layout.agent_log, log_flags, 0o600))
            identity: dict[str, Any] = {}
            if self._as_root and self._setpriv:
                # Never host root inside: switch to the sandbox's own uid. Through setpriv rather
                # than Popen(user=...), which forks the whole server (ms per 100 MB) instead of vfork.
                argv = [self._setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
            elif self._as_root:
                identity = {"user": uid, "group": gid, "extra_groups": []}
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=agent_log,
                    stderr=agent_log,
                    env=lay.base_env(spec.env, image=image is not None),
                    pass_fds=[
                        *(fd for fd in opened if fd != agent_log),
                        listener.fileno(),
                        *([] if self._lifeline is None else [self._lifeline]),
                    ],
                    start_new_session=True,  # its own session: a ^C to the server does not reach it
                    **identity,
                )
            except BaseException:
                close_fds([fd for fd in (info_read, block_write) if fd >= 0])
                raise
            return process, info_read, block_write
        finally:
            listener.close()  # the agent holds it now; if bwrap failed, connecting fails at once
            close_fds(opened)

    async def _abort_launch(
        self,
        bwrap: subprocess.Popen[bytes] | None,
        cgroup: SandboxCgroup | None,
        layout: lay.StateLayout,
        ids: IdRange | None,
        child_pid: int,
    ) -> None:
        if bwrap is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bwrap.pid, signal.SIGKILL)  # bwrap's own session; the agent is in its own
        if cgroup is not None:
            with contextlib.suppress(CgroupError):
                await cgroup.kill_and_remove()
        if bwrap is not None:
            with contextlib.suppress(ProcessLookupError):
                bwrap.kill()
            await asyncio.get_running_loop().run_in_executor(None, bwrap.wait)
        forget_run_files(layout)
        self._release_ids(ids, child_pid)

    # --- pause / resume / destroy -----------------------------------------------------------------

    def _freezable(self, handle: SandboxHandle) -> SandboxCgroup:
        sandbox = _own(handle)
        if sandbox.cgroup is None or not sandbox.cgroup.can_freeze:
            raise BackendError("pause/resume needs the cgroup freezer, which is not available here")
        return sandbox.cgroup

    async def pause(self, handle: SandboxHandle) -> None:
        """Freeze every process of the sandbox; returns once the kernel reports it frozen."""
        try:
            await self._freezable(handle).set_frozen(True)
        except (CgroupError, OSError) as exc:
            raise BackendError(f"cannot pause: {exc}") from None

    async def resume(self, handle: SandboxHandle) -> None:
        """Thaw every process of the sandbox."""
        try:
            await self._freezable(handle).set_frozen(False)
        except (CgroupError, OSError) as exc:
            raise BackendError(f"cannot resume: {exc}") from None

    async def destroy(self, handle: SandboxHandle) -> None:
        """Kill the tree (the agent is PID 1: its death takes the whole PID namespace), remove cgroups."""
        sandbox = _own(handle)
        if sandbox.destroyed:
            return
        sandbox.destroyed = True
        problem = await kill_tree(sandbox._agent_pidfd, sandbox._bwrap_pidfd, sandbox.cgroup)
        await network.disconnect(self._networks, sandbox)
        if sandbox._bwrap is not None:
            sandbox._bwrap.poll()
        sandbox._agent_pidfd = sandbox._bwrap_pidfd = -1
        forget_run_files(sandbox.layout)
        self._release_ids(sandbox.ids, sandbox.agent_pid)
        if problem:
            raise BackendError(f"sandbox {sandbox.sandbox_id} destroyed, but: {problem}")

    def is_alive(self, handle: SandboxHandle) -> bool:
        """False once destroyed or once the agent (PID 1) has died."""
        sandbox = _own(handle)
        if sandbox.destroyed or sandbox._agent_pidfd < 0:
            return False
        if sandbox._bwrap is not None:
            sandbox._bwrap.poll()  # reap bwrap if it is done
        return not pidfd_exited(sandbox._agent_pidfd)

    # --- adopt ------------------------------------------------------------------------------------

    async def adopt(self, spec: SandboxSpec) -> BwrapSandbox | None:
        """Re-attach to the sandbox recorded in `state_dir/run/agent.json`, or clean up after it."""
        layout = lay.StateLayout(spec.state_dir)
        try:
            await asyncio.to_thread(disk.ensure_mounted, spec.state_dir)  # its files, also if it is dead
        except disk.DiskError as exc:
            _log.warning("the disk of sandbox %s could not be mounted again: %s", spec.sandbox_id, exc)
        record = read_record(layout)
        cgroup = SandboxCgroup.from_json(record.get("cgroup")) if record else None
        if cgroup is None:
            cgroup = self._cgroups.existing(_cgroup_name(spec.sandbox_id))
        agent_pidfd = bwrap_pidfd = -1
        handle: BwrapSandbox | None = None
        ids = recorded_ids(record)
        try:
            if record is None:
                return None
            agent_pid, bwrap_pid = int(record["agent_pid"]), int(record["bwrap_pid"])
            agent_pidfd = pidfd_if_same(agent_pid, record.get("agent_start"))
            if agent_pidfd < 0:
                return None
            bwrap_pidfd = pidfd_if_same(bwrap_pid, record.get("bwrap_start"))
            if cgroup is None or not cgroup.is_frozen():
                _info, fds, _ = await asyncio.wait_for(request(layout.socket, {"op": "ping"}), 5.0)
                try:
                    if host_pid_of_pidfd(fds[0]) != agent_pid:
                        return None
                finally:
                    close_fds(fds)
            uid, gid = int(record["uid"]), int(record["gid"])
            if ids is not None and self._registry is not None:
                self._registry.hold(ids, agent_pid)  # a new server: the sandbox's PID 1 holds them
            handle = BwrapSandbox(
                spec,
                uid=uid,
                gid=gid,
                agent_pid=agent_pid,
                agent_pidfd=agent_pidfd,
                bwrap=None,
                bwrap_pidfd=bwrap_pidfd,
                cgroup=cgroup,
                limits_enforced=bool(record.get("limits_enforced")),
                limits_message=str(record.get("limits_message", "")),
                ids=ids,
                ids_mapped=bool(record.get("ids_mapped")),
                disk_message=str(record.get("disk_message", "")),
            )
            await network.readopt(self._networks, handle)
            return handle
        except (BackendError, OSError, ValueError, KeyError, TypeError, TimeoutError):
            return None
        finally:
            if handle is None:
                await kill_tree(agent_pidfd, bwrap_pidfd, cgroup)  # what an unadoptable one left
                forget_run_files(layout)
                self._release_ids(ids, int(record.get("agent_pid", 0)) if record else 0)

    async def remove_state(self, state_dir: Path) -> None:
        """Unmount the sandbox's disk (its loop device goes with it) and delete its state dir."""
        await asyncio.to_thread(disk.remove_tree, state_dir)

    async def close(self) -> None:
        """Destroy the warm pool's sandboxes and release backend-wide resources.

        The sandboxes handed out keep running (they are re-adopted after a restart).
        """
        await self._pool.close()
        await self._sweep_pool_dir()  # also any taken by a create that never handed it over
        await self.remove_state(self._pool_dir)
        seccomp = [] if self._seccomp is None else [self._seccomp]
        close_fds([*self._memfds.values(), *self._etc.values(), *seccomp])
        self._seccomp = None
        self._memfds.clear()
        self._etc.clear()


# --- helpers ------------------------------------------------------------------------------------------


def _own(handle: SandboxHandle) -> BwrapSandbox:
    if not isinstance(handle, BwrapSandbox):
        raise BackendError(f"not a bubblewrap sandbox: {handle!r}")
    return handle


def _limits(spec: SandboxSpec) -> Limits:
    return Limits(spec.cpu_cores, spec.memory_bytes, spec.pids_max)


def _limit_status(cgroup: SandboxCgroup | None, problem: str, limits: Limits) -> tuple[bool, str]:
    """(limits enforced, why not) for a sandbox with this cgroup (None: `problem` says why)."""
    if cgroup is not None:
        return cgroup.enforced, cgroup.message
    wanted = any(v is not None for v in (limits.cpu_cores, limits.memory_bytes, limits.pids_max))
    return not wanted, f"limits not enforced: {problem}" if wanted else f"no cgroups: {problem}"


def _start_failure(spec: SandboxSpec, layout: lay.StateLayout, exc: BaseException) -> BackendError:
    detail = tail(layout.agent_log)
    reason = "timed out waiting for the agent" if isinstance(exc, TimeoutError) else str(exc)
    return BackendError(
        f"sandbox {spec.sandbox_id} failed to start: {reason}" + (f"\n{detail}" if detail else "")
    )


def _cgroup_name(sandbox_id: str) -> str:
    return "osbox-" + re.sub(r"[^A-Za-z0-9_.-]", "_", sandbox_id)[:200]
