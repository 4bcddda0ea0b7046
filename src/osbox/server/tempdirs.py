"""The temporary data dirs of ephemeral servers (`LocalServer`): owned while their process lives,
swept once it is gone.

A `LocalServer` without a data dir makes `<tmp>/osbox-serve-XXXXXXXX` and holds an exclusive `flock`
on its `owner.lock` for as long as it runs. The kernel drops the lock when the process ends, however
it ends, so a dir whose lock can be taken belongs to nobody: its server was killed before it could
clean up (its sandboxes ended with it, see `_backend/bwrap/lifeline.py`, but their cgroups and the dir
stayed). Every `LocalServer` sweeps such dirs when it starts: a `Runtime` on the dir re-adopts what
is left exactly as after a restart (what is dead is cleaned up, what lives is destroyed on close),
then the dir goes.

    data = TempDataDir()        # made and locked
    ...
    data.remove()               # at a clean stop
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
import threading
from pathlib import Path

from ._backend import remove_tree
from .config import ServerConfig
from .runtime import Runtime

__all__ = ["TempDataDir", "sweep_abandoned"]

PREFIX = "osbox-serve-"
LOCK_NAME = "owner.lock"

_log = logging.getLogger("osbox.server")


class TempDataDir:
    """A fresh temporary data dir, locked by this process until `remove()` (or its end)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX))
        # Close-on-exec: no program the server starts may keep the dir owned after the server is gone.
        self._lock_fd = os.open(self.path / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def remove(self) -> None:
        """Delete the dir, then give up the lock. Idempotent."""
        if self._lock_fd < 0:
            return
        remove_tree(self.path)  # unmounting what a sandbox's disk left mounted in it first
        os.close(self._lock_fd)
        self._lock_fd = -1


def _claim(directory: Path) -> int:
    """The dir's lock, taken (an fd), if it is one of ours that nobody holds; -1 otherwise."""
    try:
        if directory.stat().st_uid != os.geteuid():
            return -1
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, not ours, or no lock file (not a LocalServer's dir)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # its server is alive (or another one is sweeping it right now)
        os.close(fd)
        return -1
    return fd


async def _discard(directory: Path) -> None:
    """End what the dir's sandboxes left (processes, cgroups, id ranges) through a Runtime on it."""
    runtime = Runtime(
        # No network: this runtime only ends what is left; the links a crashed server left are swept by
        # the next server that claims its network slot.
        ServerConfig(data_dir=directory, destroy_on_shutdown=True, warm_pool_size=0, network="none")
    )
    try:
        await runtime.start()
    finally:
        await runtime.close()


def _sweep() -> list[Path]:
    swept = []
    for directory in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        fd = _claim(directory)
        if fd < 0:
            continue
        try:
            asyncio.run(_discard(directory))
        except Exception as exc:  # best effort: the dir goes all the same
            _log.warning("cleaning up the abandoned data dir %s: %s", directory, exc)
        finally:
            remove_tree(directory)
            os.close(fd)
        swept.append(directory)
    return swept


def sweep_abandoned() -> list[Path]:
    """Clean up and remove the data dirs of ephemeral servers whose processes are gone.

    Runs in a thread of its own (it runs an event loop, and the caller may be inside one); never
    raises. Returns the dirs it removed.
    """
    swept: list[Path] = []

    def run() -> None:
        with contextlib.suppress(Exception):
            swept.extend(_sweep())

    worker = threading.Thread(target=run, name="osbox-sweep")
    worker.start()
    worker.join()
    return swept
