"""A bwrap sandbox's cpu and memory figures from its cgroup (v1 or v2), the machine's where the
cgroup has none (no quota, no memory limit) or where there is no cgroup at all."""

from __future__ import annotations

from pathlib import Path

from ..base import ResourceUsage
from ..machine import machine_cores, machine_cpu_seconds, machine_memory, read_text
from .cgroups import SandboxCgroup

__all__ = ["cgroup_usage"]


def cgroup_usage(group: SandboxCgroup | None) -> ResourceUsage:
    """cpu count = the cgroup's cpu quota (else the machine's cores), cpu time = its usage,
    memory total = its limit (if below the machine's), used = its usage."""
    source = _CgroupFiles(group)
    total, used = source.memory()
    return ResourceUsage(source.cpu_seconds(), source.cpu_count(), total, used)


class _CgroupFiles:
    """Reads the raw counters of one cgroup, or the machine's."""

    def __init__(self, group: SandboxCgroup | None) -> None:
        self.version: str | None = group.version if group is not None else None
        self.paths: dict[str, Path] = dict(group.paths) if group is not None else {}
        if self.version not in ("v1", "v2") or not self.paths:
            self.version = None

    def _dir(self, controller: str) -> Path | None:
        return self.paths.get("unified" if self.version == "v2" else controller)

    def cpu_seconds(self) -> float:
        if self.version == "v1" and (d := self._dir("cpu")) is not None:
            usage = read_text(d / "cpuacct.usage")
            if usage and usage.isdigit():
                return int(usage) / 1e9
        if self.version == "v2" and (d := self._dir("cpu")) is not None:
            for line in (read_text(d / "cpu.stat") or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.isdigit():
                    return int(value) / 1e6
        return machine_cpu_seconds()

    def cpu_count(self) -> float:
        machine = machine_cores()
        quota: float | None = None
        if self.version == "v1" and (d := self._dir("cpu")) is not None:
            q, p = read_text(d / "cpu.cfs_quota_us"), read_text(d / "cpu.cfs_period_us")
            if q and p and q.lstrip("-").isdigit() and p.isdigit() and int(q) > 0:
                quota = int(q) / int(p)
        if self.version == "v2" and (d := self._dir("cpu")) is not None:
            q, _, p = (read_text(d / "cpu.max") or "max").partition(" ")
            if q.isdigit() and p.isdigit():
                quota = int(q) / int(p)
        return round(min(quota, machine), 3) if quota else machine

    def memory(self) -> tuple[int, int]:
        total, used = machine_memory()
        if self.version is None or (d := self._dir("memory")) is None:
            return total, used
        names = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        if self.version == "v2":
            names = ("memory.max", "memory.current")
        limit, usage = read_text(d / names[0]), read_text(d / names[1])
        if usage and usage.isdigit():
            used = int(usage)
            if limit and limit.isdigit() and int(limit) < total:
                total = int(limit)
        return total, used
