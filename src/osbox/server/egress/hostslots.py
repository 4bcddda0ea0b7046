"""Host-wide claims on sandbox network layouts, so servers on one machine never collide.

Every server with sandbox networks needs an interface prefix (its host ends `<prefix>-…`, its nft table
`inet <prefix>_host`) and an address pool no other server on the machine uses. Servers agree through a
registry under `/run/osbox/net/<namespace>/` (one per host network namespace: servers in different
namespaces cannot collide): one file per claimed prefix, `<prefix>.claim`, holding its pool and owner,
and **locked** (`flock`) by the owning server for as long as it runs. A claim whose lock nobody holds is
stale (its server stopped or crashed: the kernel drops the lock with the process) and may be taken over;
the new owner's `HostNetwork.start` removes what the old one left under that prefix. Claiming (check
every live claim, lock a free one) happens under the registry's own lock, so two servers starting at
once never pick the same layout. A namespace's directory goes with its last claim (released, or stale:
each claim also sweeps the directories of other namespaces whose servers are all gone, e.g. a test's
namespace deleted after its server crashed).

Layouts not given explicitly are chosen from `candidates`: slot 0 is `osbx` with 100.96.0.0/16, slot k
is `osbx<k>` with 100.(96+k).0.0/16, up to 32 slots (all within the shared address space 100.64.0.0/10).
A server prefers the slot it had last time (kept in its data dir by the caller), so after a restart it
finds its own leftovers and re-adopts its sandboxes at their old addresses.

    claim = claim_layout(None, None, preferred="osbx2", netns=None)   # -> Claim(prefix, pool, ...)
    ...
    claim.release()
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

__all__ = ["DEFAULT_POOL", "REGISTRY_DIR", "Claim", "LayoutTaken", "candidates", "claim_layout"]

DEFAULT_POOL = IPv4Network("100.96.0.0/16")
REGISTRY_DIR = Path("/run/osbox/net")
"""Root of the registry (root only: `/run` is root's); one subdirectory per host network namespace."""
SLOTS = 32
_DEFAULT_PREFIX = "osbx"
_SUFFIX = ".claim"


class LayoutTaken(RuntimeError):
    """The asked-for prefix or pool is another running server's, or every default slot is taken."""


@dataclass
class Claim:
    """A layout this process holds: its prefix and pool, locked until `release` (or the process ends)."""

    prefix: str
    pool: IPv4Network
    fd: int | None
    directory: Path | None = None

    def others_alive(self) -> bool:
        """Whether another running server holds a layout in this namespace (it may need what the host
        was given for sandboxes, e.g. forwarding on the uplinks)."""
        if self.directory is None:
            return False
        with _locked(self.directory, create=False) as held:
            return held and any(prefix != self.prefix for prefix, _, _ in _live_claims(self.directory))

    def release(self) -> None:
        """Give the layout back (its file goes, and the namespace's directory with the last claim; a
        crash leaves it stale for the next server instead)."""
        if self.fd is None:
            return
        path = os.readlink(f"/proc/self/fd/{self.fd}")
        try:
            if self.directory is None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return
            with _locked(self.directory, create=False) as held:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                if held:
                    _remove_if_unclaimed(self.directory)
        finally:
            os.close(self.fd)
            self.fd = None


def candidates() -> Iterator[tuple[str, IPv4Network]]:
    """The default layouts, slot by slot: (`osbx`, 100.96.0.0/16), (`osbx1`, 100.97.0.0/16), ..."""
    base = int(DEFAULT_POOL.network_address)
    for slot in range(SLOTS):
        prefix = _DEFAULT_PREFIX if slot == 0 else f"{_DEFAULT_PREFIX}{slot}"
        yield prefix, IPv4Network((base + (slot << 16), 16))


def claim_layout(
    prefix: str | None,
    pool: IPv4Network | None,
    *,
    preferred: str | None = None,
    netns: str | None = None,
    owner: str = "",
    registry: Path = REGISTRY_DIR,
) -> Claim:
    """Claim a layout: `prefix` and `pool` as given, or (None) from the default slots, `preferred` (a
    prefix claimed before) first. Raises `LayoutTaken` saying who holds what, `OSError` when the
    registry cannot be written."""
    directory = registry / _namespace_key(netns)
    options = list(dict.fromkeys((prefix or p, pool or q) for p, q in candidates()))
    options.sort(key=lambda option: option[0] != preferred)
    _sweep_unclaimed(registry, keep=directory)
    with _locked(directory, create=True):
        live = _live_claims(directory)
        refusals = []
        for option_prefix, option_pool in options:
            holder = next((c for c in live if c[0] == option_prefix or c[1].overlaps(option_pool)), None)
            if holder is None:
                fd = _take(directory, option_prefix, option_pool, owner)
                if fd is not None:
                    return Claim(option_prefix, option_pool, fd, directory)
                holder = (option_prefix, option_pool, "a server starting at the same time")
            refusals.append(f"{option_prefix} ({option_pool}): held by {holder[2] or 'another server'}")
        if prefix is None and pool is None:
            raise LayoutTaken(f"all {SLOTS} sandbox network slots of this host are taken by running servers")
        raise LayoutTaken(f"sandbox network {'; '.join(refusals[:3])}; choose another prefix or pool")


def _namespace_key(netns: str | None) -> str:
    info = os.stat(netns or "/proc/self/ns/net")
    return f"{info.st_dev:x}-{info.st_ino:x}"


@contextlib.contextmanager
def _locked(directory: Path, *, create: bool) -> Iterator[bool]:
    """Hold the namespace directory's lock (`.lock`); yields whether it is held. `create`: make the
    directory if it is not there; otherwise yield False when it is gone (nothing of it to change).

    The lock file is the directory's: whoever removes the directory (`_remove_if_unclaimed`) does so
    holding it, so a lock taken on a file that was removed meanwhile is no lock at all: taken again on
    the current one (or a new directory) until the file locked is the one in place.
    """
    lock = directory / ".lock"
    while True:
        if create:
            directory.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        try:
            fd = os.open(
                lock, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
        except FileNotFoundError:
            if create:
                continue  # removed between the mkdir and the open: make it again
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a few file operations by whoever has it
            try:
                current = os.stat(lock, follow_symlinks=False)
            except FileNotFoundError:
                continue  # the directory went while this waited for its lock
            mine = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                continue
            yield True
            return
        finally:
            os.close(fd)


def _remove_if_unclaimed(directory: Path) -> bool:
    """Remove the namespace directory (holding its lock) when no live claim is left in it; whether it
    went. Stale claims go with it (`_live_claims`)."""
    if _live_claims(directory):
        return False
    try:
        for entry in directory.iterdir():
            if entry.name != ".lock":
                return False  # something not ours: leave it
        (directory / ".lock").unlink()
        directory.rmdir()
    except OSError:
        return False
    return True


def _sweep_unclaimed(registry: Path, *, keep: Path) -> None:
    """Remove the directories of other namespaces whose claims are all stale (their servers gone)."""
    try:
        others = [d for d in registry.iterdir() if d != keep and d.is_dir() and not d.is_symlink()]
    except FileNotFoundError:
        return
    for directory in others:
        with _locked(directory, create=False) as held:
            if held:
                _remove_if_unclaimed(directory)


def _live_claims(directory: Path) -> list[tuple[str, IPv4Network, str]]:
    """(prefix, pool, owner) of each claim whose server still holds its lock; stale ones are removed."""
    live = []
    for path in directory.glob(f"*{_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                record = json.loads(os.pread(fd, 4096, 0) or b"{}")
                live.append((path.name.removesuffix(_SUFFIX), IPv4Network(record["pool"]), record["owner"]))
                continue
            path.unlink()  # stale: its server is gone (a new claim of that prefix sweeps its leftovers)
        except (ValueError, KeyError, TypeError):  # unreadable but locked: its prefix alone is taken
            live.append((path.name.removesuffix(_SUFFIX), IPv4Network("255.255.255.255/32"), ""))
        finally:
            os.close(fd)
    return live


def _take(directory: Path, prefix: str, pool: IPv4Network, owner: str) -> int | None:
    path = directory / f"{prefix}{_SUFFIX}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pool": str(pool), "owner": owner, "pid": os.getpid()}).encode(), 0)
    return fd
