"""`GET /metrics` and `GET /metrics/watch`: cpu and memory of the sandbox.

The figures are what the backend's `handle.usage()` tells: the sandbox's own where its limits are
enforced (cpu count = its cpu quota, memory total = its limit), else the machine's. cpu % = the
busy cpu-seconds between two readings over that many cores: the last reading per sandbox is kept;
when there is none recent, two are taken a quarter second apart.

Decision: `/metrics/watch` emits one compact JSON object per line (NDJSON) every 2 s, as the
reference does, not `JSON\\n\\n` events; the SDKs accept both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from osbox.server._backend.base import SandboxHandle

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


class MetricsApi:
    """The metrics endpoints; remembers the last cpu sample of each sandbox."""

    def __init__(self) -> None:
        self._last: dict[str, Sample] = {}

    def forget(self, sandbox_id: str) -> None:
        """Drop a sandbox's last sample."""
        self._last.pop(sandbox_id, None)

    async def snapshot(self, handle: SandboxHandle) -> dict[str, Any]:
        """One `Metrics` object for the sandbox behind `handle`."""
        previous = self._last.get(handle.sandbox_id)
        if previous is None or time.monotonic() - previous.at > FRESH_SAMPLE_SECONDS:
            previous = Sample(handle.usage().cpu_seconds, time.monotonic())
            await asyncio.sleep(FIRST_SAMPLE_GAP_SECONDS)
        usage = handle.usage()
        current = Sample(usage.cpu_seconds, time.monotonic())
        self._last[handle.sandbox_id] = current
        cores = usage.cpu_count
        elapsed = max(current.at - previous.at, 1e-6)
        busy = max(current.cpu_seconds - previous.cpu_seconds, 0.0)
        return {
            "cpu_count": cores,
            "cpu_used_pct": round(min(100.0, 100.0 * busy / (elapsed * cores)), 2),
            "mem_total_mib": round(usage.memory_total / MIB, 2),
            "mem_used_mib": round(usage.memory_used / MIB, 2),
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
