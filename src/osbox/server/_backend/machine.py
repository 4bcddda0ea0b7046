"""The machine's own cpu and memory figures, read from /proc: what a backend reports for a sandbox
whose own it cannot tell (no cgroup), and what cgroup figures fall back to piece by piece."""

from __future__ import annotations

import os
from pathlib import Path

from .base import ResourceUsage

__all__ = ["machine_cores", "machine_cpu_seconds", "machine_memory", "machine_usage", "read_text"]


def read_text(path: Path) -> str | None:
    """The stripped text of a small kernel file, or None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def machine_cores() -> float:
    """The cores this process may run on."""
    return float(len(os.sched_getaffinity(0)))


def machine_cpu_seconds() -> float:
    """Busy cpu-seconds of the whole machine since boot (all but idle and iowait), from /proc/stat."""
    fields = (read_text(Path("/proc/stat")) or "cpu 0").splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    busy = sum(ticks) - sum(ticks[3:5])
    return busy / os.sysconf("SC_CLK_TCK")


def machine_memory() -> tuple[int, int]:
    """(total, used) bytes of the machine, used = total - available, from /proc/meminfo."""
    info: dict[str, int] = {}
    for line in (read_text(Path("/proc/meminfo")) or "").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal", 0)
    return total, total - info.get("MemAvailable", info.get("MemFree", 0))


def machine_usage() -> ResourceUsage:
    """The machine's figures as one `ResourceUsage`."""
    total, used = machine_memory()
    return ResourceUsage(machine_cpu_seconds(), machine_cores(), total, used)
