"""Per-sandbox ranges of host uids and gids, reserved machine-wide (when the server runs as root).

Each sandbox gets `RANGE_SIZE` (65536) consecutive host ids: its user namespace maps sandbox id N
to host id `base + N`, for uids and gids alike (`uid_map` and `gid_map` are both "0 base 65536").
Sandbox uid 0 is therefore host uid `base`: an unprivileged id like any other outside.

Where ranges lie: slot s is `UID_BASE + s * RANGE_SIZE` (UID_BASE = 0x10000000, far above the ids
distributions hand out), up to `ID_LIMIT` (0x7FFF0000: ids of 2**31 and more read as negative to
tools that take ids as signed ints, bwrap among them). A slot overlapping any id the host names in
/etc/passwd or /etc/group, or any range in /etc/subuid or /etc/subgid (rootless containers'
ranges), is never used.

Who holds which slot is recorded for the whole machine, not per server, so that servers on other
data dirs, a restarted server and the warm pool never collide: one file per slot in
`/run/osbox/idranges` (root-only; /run is emptied at boot, when every sandbox is gone anyway)
lists the processes that keep the slot busy, each as (host pid, start time) so that a reused pid
is not mistaken for it: the server that reserved it and, from the moment bwrap reports it, the
sandbox's PID 1. A slot is free when it has no file or when none of its holders is alive any more:
destroy releases it at once, and the slot of a sandbox that died while its server was down is
reclaimed by the next reservation, while a sandbox that outlives its server (`osbox serve`
restarts) keeps its slot. Reservations run under an exclusive `flock` of the directory's lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import BackendError
from .procs import start_time
from .statedir import Owners

__all__ = [
    "ID_LIMIT",
    "RANGE_SIZE",
    "REGISTRY_DIR",
    "UID_BASE",
    "IdMapsRefused",
    "IdRange",
    "IdRangeRegistry",
    "map_ids",
    "owners_into",
    "recorded_ids",
    "write_id_maps",
]

UID_BASE = 0x10000000
RANGE_SIZE = 0x10000
ID_LIMIT = 0x7FFF0000
REGISTRY_DIR = Path("/run/osbox/idranges")
_SLOTS = (ID_LIMIT - UID_BASE) // RANGE_SIZE
_log = logging.getLogger("osbox.server.backend")


@dataclass(frozen=True)
class IdRange:
    """Host ids `base .. base + size - 1`, seen inside the sandbox as `0 .. size - 1`."""

    base: int
    size: int = RANGE_SIZE

    @property
    def slot(self) -> int:
        return (self.base - UID_BASE) // RANGE_SIZE

    def host_id(self, sandbox_id: int) -> int:
        """The host id of sandbox id `sandbox_id`."""
        return self.base + sandbox_id

    def owner_for(self, host_id: int, default: int) -> int:
        """The host id a file owned by `host_id` gets when it moves into this range.

        Files from another sandbox's range (a snapshot, a restarted sandbox) keep their id *inside*
        the sandbox; any other owner (e.g. root, after a copy) becomes `default`'s.
        """
        if UID_BASE <= host_id < ID_LIMIT:
            return self.base + (host_id - UID_BASE) % RANGE_SIZE
        return self.base + default

    def map_text(self) -> str:
        """The line for `/proc/PID/uid_map` and `gid_map`."""
        return f"0 {self.base} {self.size}\n"


def write_id_maps(pid: int, id_range: IdRange) -> None:
    """Map the user namespace of `pid` (bwrap's child, waiting) to `id_range`, uids and gids.

    Root in the parent namespace may write any mapping, and `setgroups` stays allowed (only an
    unprivileged writer must deny it), so the agent can give each child its own groups.
    Raises OSError when the kernel refuses.
    """
    text = id_range.map_text().encode()
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def _host_ranges() -> list[tuple[int, int]]:
    """(first, count) of every id the host itself names: users, groups, subordinate ranges."""
    ranges: list[tuple[int, int]] = []
    for path, first_field, count_field in (
        ("/etc/passwd", 2, None),
        ("/etc/passwd", 3, None),
        ("/etc/group", 2, None),
        ("/etc/subuid", 1, 2),
        ("/etc/subgid", 1, 2),
    ):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(":")
            with contextlib.suppress(IndexError, ValueError):
                count = 1 if count_field is None else int(fields[count_field])
                ranges.append((int(fields[first_field]), count))
    return ranges


class IdRangeRegistry:
    """The machine-wide record of which slot is whose (see the module docstring)."""

    def __init__(self, directory: Path = REGISTRY_DIR) -> None:
        self.directory = directory
        self._excluded = {
            slot
            for first, count in _host_ranges()
            if first + count > UID_BASE and first < ID_LIMIT
            for slot in range(
                max(0, (first - UID_BASE) // RANGE_SIZE),
                min(_SLOTS, (first + count - 1 - UID_BASE) // RANGE_SIZE + 1),
            )
        }
        self._me = (os.getpid(), start_time(os.getpid()))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot use the id-range registry {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _path(self, slot: int) -> Path:
        return self.directory / str(slot)

    def _holders(self, slot: int) -> list[tuple[int, int | None]] | None:
        """The recorded holders of `slot`, or None when it has no record."""
        try:
            data = json.loads(self._path(slot).read_text())
            return [(int(pid), None if start is None else int(start)) for pid, start in data["holders"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return []  # unreadable: treat as held by nobody

    def _write(self, slot: int, holders: list[tuple[int, int | None]]) -> None:
        temporary = self._path(slot).with_suffix(".tmp")
        temporary.write_text(json.dumps({"holders": holders}))
        temporary.replace(self._path(slot))

    @staticmethod
    def _alive(holders: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
        return [(pid, start) for pid, start in holders if start is not None and start_time(pid) == start]

    def reserve(self) -> IdRange:
        """A free range, now held by this process until `release` (or until every holder is gone)."""
        with self._locked():
            for attempt in range(_SLOTS + 64):  # random slots first (few collisions), then every one
                slot = secrets.randbelow(_SLOTS) if attempt < 64 else attempt - 64
                if slot in self._excluded:
                    continue
                holders = self._holders(slot)
                if holders is not None and self._alive(holders):
                    continue
                self._write(slot, [self._me])
                return IdRange(UID_BASE + slot * RANGE_SIZE)
        raise BackendError("no free range of host ids is left for another sandbox")

    def sweep(self) -> None:
        """Remove the records whose holders are all gone, and half-written ones (crashed servers)."""
        try:
            with self._locked():
                for entry in os.scandir(self.directory):
                    # A .tmp file is half-written (writers hold the lock: nobody is writing it now).
                    half_written = entry.name.endswith(".tmp")
                    if half_written or (
                        entry.name.isdigit() and not self._alive(self._holders(int(entry.name)) or [])
                    ):
                        Path(entry.path).unlink(missing_ok=True)
        except (BackendError, OSError) as exc:
            _log.warning("could not sweep the id-range registry: %s", exc)

    def hold(self, id_range: IdRange, pid: int) -> None:
        """Record `pid` (a sandbox's PID 1) as a holder of `id_range`, next to the live ones."""
        with self._locked():
            holders = self._alive(self._holders(id_range.slot) or [])
            holders.append((pid, start_time(pid)))
            self._write(id_range.slot, holders)

    def release(self, id_range: IdRange, pids: Collection[int] = ()) -> None:
        """This process and `pids` (the sandbox's PID 1, gone) no longer hold `id_range`.

        The slot is free once no live holder remains; a slot that another server reclaimed in the
        meantime (its holders are alive) is left alone.
        """
        try:
            with self._locked():
                gone = {self._me[0], *pids}
                holders = [h for h in self._alive(self._holders(id_range.slot) or []) if h[0] not in gone]
                if holders:
                    self._write(id_range.slot, holders)
                else:
                    self._path(id_range.slot).unlink(missing_ok=True)
        except (BackendError, OSError) as exc:
            _log.warning("could not release host ids %d..: %s", id_range.base, exc)


class IdMapsRefused(BackendError):
    """The kernel refused the id maps of a sandbox's user namespace."""


def map_ids(child_pid: int, id_range: IdRange, block_write: int) -> None:
    """Map bwrap's waiting child's user namespace to `id_range`, then let bwrap go on (one byte
    on the pipe it blocks on). Raises `IdMapsRefused`."""
    try:
        write_id_maps(child_pid, id_range)
    except OSError as exc:
        raise IdMapsRefused(exc.strerror or str(exc)) from None
    os.write(block_write, b"1")


def owners_into(id_range: IdRange, mapped: bool, user: int) -> Owners:
    """How files already in a state dir are chowned into `id_range` (see `IdRange.owner_for`);
    when only the sandbox user (`user`, inside) is `mapped`, everything becomes its."""
    if not mapped:
        only = (id_range.host_id(user), id_range.host_id(user))
        return lambda _uid, _gid: only
    return lambda uid, gid: (id_range.owner_for(uid, user), id_range.owner_for(gid, user))


def recorded_ids(record: Mapping[str, Any] | None) -> IdRange | None:
    """The range an adoption record names (None: none, e.g. a server that was not root)."""
    try:
        return IdRange(int(record["id_base"])) if record and record.get("id_base") is not None else None
    except (TypeError, ValueError):
        return None
