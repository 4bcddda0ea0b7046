"""Per-sandbox cgroups: limits, freeze/thaw, kill-all. cgroup v1 and v2, or none.

Groups are created under the server's own cgroup (from `/proc/self/cgroup`), never the root:

    v1   <mount of each controller>/<server's path>/osbox-<id>     memory, cpu, pids, freezer
    v2   <unified mount>/<server's path>/osbox-<id>

On a hybrid machine (v1 controllers plus an empty v2 hierarchy) v1 is used. Where a controller is
missing or not writable the sandbox still runs; `SandboxCgroup.message` says what is not enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CgroupError", "CgroupLayout", "Limits", "SandboxCgroup", "unescape_mountinfo"]

V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000
_POLL_S = 0.002  # how often to re-check a state the kernel does not notify us about (v1 freezer)


class CgroupError(Exception):
    """A cgroup operation failed; the message is for a person."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandbox; None means unlimited."""

    cpu_cores: float | None = None
    memory_bytes: int | None = None
    pids_max: int | None = None


def _own_paths(proc_cgroup: str) -> tuple[dict[str, str], str | None]:
    """Parse /proc/self/cgroup into ({v1 controller: path}, v2 path or None)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if controllers == "":
            v2 = path
        for name in controllers.split(","):
            if name:
                v1[name] = path
    return v1, v2


def _cgroup_mounts(mountinfo: str) -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
    """Parse /proc/self/mountinfo into ({v1 controller: (mount root, mount point)}, v2 mount)."""
    v1: dict[str, tuple[str, str]] = {}
    v2: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        separator = fields.index("-")
        fstype, super_options = fields[separator + 1], fields[separator + 3]
        root, mount_point = unescape_mountinfo(fields[3]), unescape_mountinfo(fields[4])
        if fstype == "cgroup2" and v2 is None:
            v2 = (root, mount_point)
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option in V1_CONTROLLERS and option not in v1:
                    v1[option] = (root, mount_point)
    return v1, v2


def unescape_mountinfo(text: str) -> str:
    """A path field of /proc/self/mountinfo as the path (`\\040` → space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _join(mount: tuple[str, str], path: str) -> Path:
    root, mount_point = mount
    relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(mount_point) / ("" if relative == "." else relative)


@dataclass
class CgroupLayout:
    """What this machine offers, detected once per backend."""

    version: str | None  # "v1", "v2" or None
    parents: dict[str, Path] = field(default_factory=dict)  # v1: controller -> dir; v2: "unified" -> dir
    reason: str = ""  # why cgroups are unusable, or which controllers are missing

    @classmethod
    def detect(cls) -> CgroupLayout:
        """Find the server's own cgroups and check that child groups can be made there."""
        try:
            own_v1, own_v2 = _own_paths(Path("/proc/self/cgroup").read_text())
            mounts_v1, mount_v2 = _cgroup_mounts(Path("/proc/self/mountinfo").read_text())
        except OSError as exc:
            return cls(None, reason=f"cannot read cgroup information: {exc}")
        parents: dict[str, Path] = {}
        for name in V1_CONTROLLERS:
            if name in mounts_v1 and name in own_v1:
                directory = _join(mounts_v1[name], own_v1[name])
                if os.access(directory, os.W_OK):
                    parents[name] = directory
        if parents:
            missing = [name for name in V1_CONTROLLERS if name not in parents]
            reason = f"cgroup v1 controllers not usable: {', '.join(missing)}" if missing else ""
            return cls("v1", parents, reason)
        if mount_v2 is not None and own_v2 is not None:
            directory = _join(mount_v2, own_v2)
            if os.access(directory, os.W_OK):
                return cls("v2", {"unified": directory})
            return cls(None, reason=f"no write access to the server's cgroup {directory}")
        return cls(None, reason="no cgroup hierarchy is mounted")

    def existing(self, name: str) -> SandboxCgroup | None:
        """The groups called `name` left by an earlier server, if any exist."""
        if self.version is None:
            return None
        children = {key: parent / name for key, parent in self.parents.items()}
        found = {key: path for key, path in children.items() if path.is_dir()}
        return SandboxCgroup(self.version, found) if found else None

    def create(self, name: str, limits: Limits) -> SandboxCgroup:
        """Make the sandbox's groups and apply `limits`. Raises CgroupError if nothing could be made."""
        if self.version is None:
            raise CgroupError(self.reason)
        if self.version == "v1":
            paths = {controller: parent / name for controller, parent in self.parents.items()}
        else:
            paths = {"unified": self.parents["unified"] / name}
        group = SandboxCgroup(self.version, paths)
        try:
            for directory in paths.values():
                with contextlib.suppress(FileExistsError):
                    directory.mkdir()
            if self.version == "v2":
                _enable_v2_controllers(self.parents["unified"])
            self.limit(group, limits)
        except (OSError, CgroupError) as exc:
            group.remove_now()
            raise CgroupError(f"cannot create cgroup {name}: {exc}") from None
        except BaseException:  # unexpected (a limit the kernel file cannot take): no group left either
            group.remove_now()
            raise
        return group

    def limit(self, group: SandboxCgroup, limits: Limits) -> None:
        """(Re)apply `limits` to an existing group; its `message` says what is not enforced."""
        try:
            group.apply(limits)
        except OSError as exc:
            raise CgroupError(f"cannot set limits: {exc}") from None
        if self.reason and group.message:
            group.message = f"{group.message} ({self.reason})"


def _enable_v2_controllers(parent: Path) -> None:
    """Delegate cpu/memory/pids to the children of `parent` (best effort)."""
    try:
        available = set((parent / "cgroup.controllers").read_text().split())
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
    except OSError:
        return
    wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
    if not wanted:
        return
    request = " ".join(f"+{c}" for c in wanted)
    try:
        (parent / "cgroup.subtree_control").write_text(request)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return  # limits stay off; the sandbox reports it
        # No-internal-process rule: a cgroup that delegates controllers must hold no processes.
        # Move the server's group members into a leaf beside the sandboxes', then delegate.
        leaf = parent / "osbox.server"  # sandbox groups are all "osbox-<id>"
        with contextlib.suppress(OSError):
            leaf.mkdir(exist_ok=True)
            for pid in (parent / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    (leaf / "cgroup.procs").write_text(pid)
            (parent / "cgroup.subtree_control").write_text(request)


@dataclass
class SandboxCgroup:
    """The cgroup(s) of one sandbox."""

    version: str
    paths: dict[str, Path]
    enforced: bool = True
    message: str = ""

    # --- limits ---------------------------------------------------------------------------------

    def apply(self, limits: Limits) -> None:
        """Write the limits; records in `enforced`/`message` which ones could not be applied."""
        missing: list[str] = []
        if limits.memory_bytes is not None and not self._set_memory(limits.memory_bytes):
            missing.append("memory")
        if limits.cpu_cores is not None and not self._set_cpu(limits.cpu_cores):
            missing.append("cpu")
        if limits.pids_max is not None and not self._set_pids(limits.pids_max):
            missing.append("pids")
        self.enforced = not missing
        self.message = f"not enforced: {', '.join(missing)} limit (controller unavailable)" if missing else ""

    def _file(self, controller: str, name: str) -> Path | None:
        directory = self.paths.get("unified" if self.version == "v2" else controller)
        if directory is None:
            return None
        path = directory / name
        return path if path.exists() else None

    def _write(self, controller: str, name: str, value: str) -> bool:
        path = self._file(controller, name)
        if path is None:
            return False
        path.write_text(value)
        return True

    def _set_memory(self, memory_bytes: int) -> bool:
        if self.version == "v1":
            if not self._write("memory", "memory.limit_in_bytes", str(memory_bytes)):
                return False
            # No swapping past the limit, where swap accounting exists.
            with contextlib.suppress(OSError):
                self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes))
            return True
        if not self._write("memory", "memory.max", str(memory_bytes)):
            return False
        with contextlib.suppress(OSError):
            self._write("memory", "memory.swap.max", "0")
        return True

    def _set_cpu(self, cores: float) -> bool:
        quota = max(1000, int(cores * CFS_PERIOD_US))
        if self.version == "v1":
            return self._write("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)) and self._write(
                "cpu", "cpu.cfs_quota_us", str(quota)
            )
        return self._write("cpu", "cpu.max", f"{quota} {CFS_PERIOD_US}")

    def _set_pids(self, pids_max: int) -> bool:
        return self._write("pids", "pids.max", str(pids_max))

    # --- membership -----------------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move `pid` (and the children it forks afterwards) into every group."""
        for directory in self.paths.values():
            with contextlib.suppress(ProcessLookupError):
                (directory / "cgroup.procs").write_text(str(pid))

    def contains(self, pid: int) -> bool:
        """Whether `pid` is in every one of the groups."""
        for directory in self.paths.values():
            try:
                members = (directory / "cgroup.procs").read_text().split()
            except OSError:
                return False
            if str(pid) not in members:
                return False
        return True

    def pids(self) -> set[int]:
        """Every process in any of the groups."""
        found: set[int] = set()
        for directory in self.paths.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    # --- freeze ---------------------------------------------------------------------------------

    @property
    def can_freeze(self) -> bool:
        """Whether freeze/thaw is available."""
        return self.version == "v2" or "freezer" in self.paths

    def _frozen_state(self) -> bool:
        if self.version == "v1":
            return (self.paths["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
        events = (self.paths["unified"] / "cgroup.events").read_text()
        return "frozen 1" in events.splitlines()

    def _request_freeze(self, frozen: bool) -> None:
        if self.version == "v1":
            (self.paths["freezer"] / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
        else:
            (self.paths["unified"] / "cgroup.freeze").write_text("1" if frozen else "0")

    async def set_frozen(self, frozen: bool, within_s: float = 10.0) -> None:
        """Freeze or thaw, returning once the kernel reports the new state."""
        if not self.can_freeze:
            raise CgroupError("pause/resume needs the cgroup freezer, which is not available")
        deadline = time.monotonic() + within_s
        self._request_freeze(frozen)
        while self._frozen_state() != frozen:
            if time.monotonic() > deadline:
                raise CgroupError("the cgroup did not reach the requested freezer state in time")
            # v1 FREEZING -> FROZEN has no notification; re-writing nudges stragglers along.
            self._request_freeze(frozen)
            await asyncio.sleep(_POLL_S)

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this group (0 if unknown)."""
        path = self._file("memory", "memory.oom_control" if self.version == "v1" else "memory.events")
        try:
            lines = path.read_text().splitlines() if path is not None else []
        except OSError:
            return 0
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def is_frozen(self) -> bool:
        """Whether the group is frozen now (False when freezing is unavailable)."""
        try:
            return self.can_freeze and self._frozen_state()
        except OSError:
            return False

    # --- teardown -------------------------------------------------------------------------------

    async def kill_and_remove(self, within_s: float = 10.0) -> None:
        """Kill every process in the groups, wait until they are empty, remove them."""
        deadline = time.monotonic() + within_s
        while True:
            self._kill_once()
            if not self.pids():
                break
            if time.monotonic() > deadline:
                raise CgroupError(f"processes survived SIGKILL in {self.paths}")
            await asyncio.sleep(_POLL_S)
        while True:
            try:
                self.remove_now()
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(f"cannot remove cgroup: {exc}") from None
            await asyncio.sleep(_POLL_S)

    def _kill_once(self) -> None:
        if self.version == "v2":
            kill_file = self.paths["unified"] / "cgroup.kill"
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
                return
        # v1 (or v2 without cgroup.kill): kill each pid; frozen, no one can fork in between, and a
        # SIGKILLed frozen task dies on thaw.
        frozen = False
        if "freezer" in self.paths:
            with contextlib.suppress(OSError):
                self._request_freeze(True)
                frozen = True
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if frozen:
            with contextlib.suppress(OSError):
                self._request_freeze(False)

    def remove_now(self) -> None:
        """rmdir every group that exists (raises OSError, e.g. EBUSY, if one is still populated)."""
        for directory in self.paths.values():
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()

    # --- persistence (for adopt after a restart) --------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description, to find the groups again after a restart."""
        return {"version": self.version, "paths": {k: str(v) for k, v in self.paths.items()}}

    @classmethod
    def from_json(cls, data: Any) -> SandboxCgroup | None:
        """The inverse of `to_json`; None for missing or malformed data."""
        if not isinstance(data, dict) or data.get("version") not in ("v1", "v2"):
            return None
        paths = data.get("paths")
        if not isinstance(paths, dict):
            return None
        return cls(str(data["version"]), {str(k): Path(str(v)) for k, v in paths.items()})
