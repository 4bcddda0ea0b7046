"""Host-side process helpers built on pidfds (no pid-reuse races, no polling), and fd waiting."""

from __future__ import annotations

import asyncio
import contextlib
import select

__all__ = ["host_pid_of_pidfd", "pidfd_exited", "start_time", "wait_fd", "wait_pidfd"]


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
