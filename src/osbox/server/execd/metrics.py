"""`GET /metrics` and `GET /metrics/watch`: cpu and memory of the sandbox.

When the sandbox's limits are enforced by cgroups and the handle exposes its cgroup (an object
with `version` "v1"/"v2" and `paths`, as the bwrap backend's `SandboxCgroup`), the figures are
the sandbox's: cpu count = its cpu quota (else the machine's cores), cpu % = its usage over that
many cores, memory total = its limit, used = its usage. Otherwise they are the machine's, read
from /proc. cpu % needs two samples: the last sample per sandbox is kept; when there is none
recent, two are taken a quarter second apart.

Decision: `/metrics/watch` emits one compact JSON object per line (NDJSON) every 2 s, as the
reference does, not `JSON\\n\\n` events; the SDKs accept both.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .inputs import sandbox_of
from .streaming import STREAM_HEADERS, now_ms

__all__ = ["MetricsApi"]

WATCH_INTERVAL_SECONDS = 2.0
FRESH_SAMPLE_SECONDS = 10.0
FIRST_SAMPLE_GAP_SECONDS = 0.25
MIB = 1024 * 1024


@dataclass
class Sample:
    """Cumulative busy cpu-seconds at a monotonic instant."""

    cpu_seconds: float
    at: float


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _machine_cores() -> float:
    return float(len(os.sched_getaffinity(0)))


def _machine_cpu_seconds() -> float:
    """Busy cpu-seconds of the whole machine since boot (all but idle and iowait), from /proc/stat."""
    fields = (_read(Path("/proc/stat")) or "cpu 0").splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    busy = sum(ticks) - sum(ticks[3:5])
    return busy / os.sysconf("SC_CLK_TCK")


def _machine_memory() -> tuple[int, int]:
    """(total, used) bytes of the machine, used = total - available, from /proc/meminfo."""
    info: dict[str, int] = {}
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal", 0)
    return total, total - info.get("MemAvailable", info.get("MemFree", 0))


class _Source:
    """Reads the raw counters of one sandbox: its cgroup's, or the machine's."""

    def __init__(self, handle: Any) -> None:
        group = getattr(handle, "cgroup", None) if getattr(handle, "limits_enforced", False) else None
        self.version: str | None = getattr(group, "version", None)
        paths = getattr(group, "paths", None)
        self.paths: dict[str, Path] = dict(paths) if isinstance(paths, dict) else {}
        if self.version not in ("v1", "v2") or not self.paths:
            self.version = None

    def _dir(self, controller: str) -> Path | None:
        return self.paths.get("unified" if self.version == "v2" else controller)

    def cpu_seconds(self) -> float:
        if self.version == "v1" and (d := self._dir("cpu")) is not None:
            usage = _read(d / "cpuacct.usage")
            if usage and usage.isdigit():
                return int(usage) / 1e9
        if self.version == "v2" and (d := self._dir("cpu")) is not None:
            for line in (_read(d / "cpu.stat") or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.isdigit():
                    return int(value) / 1e6
        return _machine_cpu_seconds()

    def cpu_count(self) -> float:
        machine = _machine_cores()
        quota: float | None = None
        if self.version == "v1" and (d := self._dir("cpu")) is not None:
            q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q and p and q.lstrip("-").isdigit() and p.isdigit() and int(q) > 0:
                quota = int(q) / int(p)
        if self.version == "v2" and (d := self._dir("cpu")) is not None:
            q, _, p = (_read(d / "cpu.max") or "max").partition(" ")
            if q.isdigit() and p.isdigit():
                quota = int(q) / int(p)
        return round(min(quota, machine), 3) if quota else machine

    def memory(self) -> tuple[int, int]:
        total, used = _machine_memory()
        if self.version is None or (d := self._dir("memory")) is None:
            return total, used
        names = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        if self.version == "v2":
            names = ("memory.max", "memory.current")
        limit, usage = _read(d / names[0]), _read(d / names[1])
        if usage and usage.isdigit():
            used = int(usage)
            if limit and limit.isdigit() and int(limit) < total:
                total = int(limit)
        return total, used


class MetricsApi:
    """The metrics endpoints; remembers the last cpu sample of each sandbox."""

    def __init__(self) -> None:
        self._last: dict[str, Sample] = {}

    def forget(self, sandbox_id: str) -> None:
        """Drop a sandbox's last sample."""
        self._last.pop(sandbox_id, None)

    async def snapshot(self, handle: Any) -> dict[str, Any]:
        """One `Metrics` object for the sandbox behind `handle`."""
        source = _Source(handle)
        previous = self._last.get(handle.sandbox_id)
        if previous is None or time.monotonic() - previous.at > FRESH_SAMPLE_SECONDS:
            previous = Sample(source.cpu_seconds(), time.monotonic())
            await asyncio.sleep(FIRST_SAMPLE_GAP_SECONDS)
        current = Sample(source.cpu_seconds(), time.monotonic())
        self._last[handle.sandbox_id] = current
        cores = source.cpu_count()
        elapsed = max(current.at - previous.at, 1e-6)
        busy = max(current.cpu_seconds - previous.cpu_seconds, 0.0)
        total, used = source.memory()
        return {
            "cpu_count": cores,
            "cpu_used_pct": round(min(100.0, 100.0 * busy / (elapsed * cores)), 2),
            "mem_total_mib": round(total / MIB, 2),
            "mem_used_mib": round(used / MIB, 2),
            "timestamp": now_ms(),
        }

    async def get(self, request: Request) -> Response:
        """`GET /metrics`."""
        return JSONResponse(await self.snapshot(sandbox_of(request)))

    async def watch(self, request: Request) -> Response:
        """`GET /metrics/watch`: a metrics object per line about every 2 s until the client leaves."""
        handle = sandbox_of(request)

        async def lines() -> AsyncIterator[bytes]:
            while True:
                yield json.dumps(await self.snapshot(handle), separators=(",", ":")).encode() + b"\n"
                await asyncio.sleep(WATCH_INTERVAL_SECONDS)

        return StreamingResponse(lines(), media_type="text/event-stream", headers=STREAM_HEADERS)
