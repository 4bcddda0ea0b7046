"""Host-side process helpers built on pidfds (no pid-reuse races, no polling), and fd waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
from pathlib import Path

from .cgroups import CgroupError, SandboxCgroup

__all__ = [
    "host_pid_of_pidfd",
    "kill_tree",
    "pidfd_exited",
    "pidfd_if_same",
    "protect_from_oom_killer",
    "read_child_pid",
    "start_time",
    "wait_fd",
    "wait_pidfd",
]


def host_pid_of_pidfd(pidfd: int) -> int:
    """The pid, in the server's PID namespace, of the process `pidfd` refers to.

    A pidfd made inside a sandbox and passed over SCM_RIGHTS still names the same process; the
    kernel translates its pid for whoever reads its fdinfo.
    """
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid > 0:
                    return pid
    raise ProcessLookupError("the process behind this pidfd is gone")


def pidfd_exited(pidfd: int) -> bool:
    """Whether the process has exited (a pidfd polls readable once it has)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


async def wait_fd(fd: int, *, writable: bool = False, within_s: float | None = None) -> bool:
    """Wait until `fd` is readable (or writable) in the running loop; False on timeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    if writable:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(future, within_s)
    except TimeoutError:
        return False
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
    return True


async def wait_pidfd(pidfd: int, within_s: float | None = None) -> bool:
    """Wait until the process exits; False on timeout."""
    return pidfd_exited(pidfd) or await wait_fd(pidfd, within_s=within_s)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if there is no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            text = stat_file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    with contextlib.suppress(IndexError, ValueError):
        return int(fields[19])  # field 22 overall
    return None


def pidfd_if_same(pid: int, recorded_start: object) -> int:
    """A pidfd for `pid` if it is still the process that was recorded (same start time), else -1."""
    if not isinstance(recorded_start, int) or pid <= 1:
        return -1
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return -1
    if start_time(pid) != recorded_start:  # checked after opening: the pidfd pins this process
        os.close(pidfd)
        return -1
    return pidfd


async def read_child_pid(info_read: int, within_s: float) -> int:
    """The agent's host pid from bwrap's info pipe (0 if bwrap closed it without one)."""
    os.set_blocking(info_read, False)
    data = b""
    while True:
        try:
            chunk = os.read(info_read, 4096)
        except BlockingIOError:
            if not await wait_fd(info_read, within_s=within_s):
                raise TimeoutError from None
            continue
        if not chunk:
            break
        data += chunk
        found = re.search(rb'"child-pid"\s*:\s*(\d+)', data)
        if found:
            return int(found.group(1))
    return 0


def protect_from_oom_killer(agent_pid: int) -> None:
    """Make the OOM killer pick the sandbox's workload, never its agent (PID 1, whose exit ends it).

    Lowering `oom_score_adj` needs privilege the sandbox lacks, so the server does it from outside;
    without it (not root) the agent keeps the default score and is still the smallest process.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{agent_pid}/oom_score_adj").write_text("-1000")


async def kill_tree(agent_pidfd: int, bwrap_pidfd: int, cgroup: SandboxCgroup | None) -> str:
    """Kill a sandbox's tree (its PID 1 takes its PID namespace along), wait for it, remove its
    cgroups, close the pidfds (-1: none). Returns why the cgroups could not be removed ("": they were)."""
    if agent_pidfd >= 0:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(agent_pidfd, signal.SIGKILL)
        if cgroup is not None and cgroup.is_frozen():
            with contextlib.suppress(CgroupError, OSError):
                await cgroup.set_frozen(False)  # a frozen task only acts on SIGKILL once thawed
        await wait_pidfd(agent_pidfd, 10.0)
    if bwrap_pidfd >= 0:
        await wait_pidfd(bwrap_pidfd, 10.0)
    problem = ""
    if cgroup is not None:
        try:
            await cgroup.kill_and_remove()
        except CgroupError as exc:
            problem = str(exc)
    for fd in (agent_pidfd, bwrap_pidfd):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    return problem
