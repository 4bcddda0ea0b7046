"""`GET /metrics` and `GET /metrics/watch`: cpu and memory of the sandbox.

The figures are what the backend's `handle.usage()` tells: the sandbox's own where its limits are
enforced (cpu count = its cpu quota, memory total = its limit), else the machine's. cpu % = the
busy cpu-seconds between two readings over that many cores: the last reading per sandbox is kept;
when there is none recent, two are taken a quarter second apart.

`/metrics/watch` follows the spec, not the reference (which writes one JSON object per line every
2 s): a Server-Sent Event every second, `data: {...}` then a blank line, so every SSE client
dispatches each sample as it comes (one that waits for the blank line, as the Go SDK does, would
otherwise see nothing until the stream closed). osbox's SDK reads both framings.
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

#: The spec's interval between two samples of `/metrics/watch`.
WATCH_INTERVAL_SECONDS = 1.0
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
        """`GET /metrics/watch`: an SSE event (`data: {...}` + blank line) every second until the
        client leaves. The interval runs from one sample's start to the next, so taking a sample
        does not stretch it."""
        handle = sandbox_of(request)

        async def events() -> AsyncIterator[bytes]:
            while True:
                started = time.monotonic()
                sample = json.dumps(await self.snapshot(handle), separators=(",", ":"))
                yield b"data: " + sample.encode() + b"\n\n"
                await asyncio.sleep(max(0.0, WATCH_INTERVAL_SECONDS - (time.monotonic() - started)))

        return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)
