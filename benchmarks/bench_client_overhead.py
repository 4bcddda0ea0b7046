"""Per-call overhead of a small GET: `LifecycleClient.get_sandbox` vs the same request with raw httpx2.

Server: `_fixed_server.py` (uvicorn + a raw ASGI callable answering a fixed ~400-byte Sandbox JSON) in a
subprocess on 127.0.0.1. Both clients keep one connection alive and send the same headers; the raw
client reads the body and `json.loads` it, osbox also validates it into a `Sandbox` model. The two are
interleaved in rounds (alternating which goes first) so machine drift hits both equally.
Goal: median osbox call <= 1.15x median raw call, sync and async.

    python benchmarks/bench_client_overhead.py [--quick]
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
from _common import (
    Goal,
    Report,
    format_profile,
    free_port,
    median,
    parse_args,
    percentile,
    profile_top,
    stop_process,
    us,
    wait_for_port,
)

from osbox import AsyncLifecycleClient, LifecycleClient

GOAL_RATIO = 1.15
SANDBOX_ID = "sbx-0123456789abcdef"
API_KEY = "bench-api-key"


def raw_headers() -> dict[str, str]:
    """The headers osbox sends on a lifecycle GET, so the raw client sends the same."""
    from osbox import __version__

    return {
        "User-Agent": f"osbox-python/{__version__}",
        "Accept": "application/json",
        "OPEN-SANDBOX-API-KEY": API_KEY,
    }


def interleave(calls: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Time every call of each client, client order alternating between rounds.

    Also records this process's CPU time per block under `"<name>:cpu"` (one value per call, the
    block's mean): wall latency on a loaded machine includes scheduler wake-ups that can hide CPU work.
    """
    names = list(calls)
    times: dict[str, list[float]] = {key: [] for name in names for key in (name, f"{name}:cpu")}
    clock, cpu = time.perf_counter, time.process_time
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else reversed(names):
            call, sink = calls[name], times[name]
            cpu_start = cpu()
            for _ in range(per_round):
                start = clock()
                call()
                sink.append(clock() - start)
            times[f"{name}:cpu"] += [(cpu() - cpu_start) / per_round] * per_round
    return times


async def ainterleave(
    calls: dict[str, Callable[[], Awaitable[object]]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """The async twin of `interleave`."""
    names = list(calls)
    times: dict[str, list[float]] = {key: [] for name in names for key in (name, f"{name}:cpu")}
    clock, cpu = time.perf_counter, time.process_time
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else reversed(names):
            call, sink = calls[name], times[name]
            cpu_start = cpu()
            for _ in range(per_round):
                start = clock()
                await call()
                sink.append(clock() - start)
            times[f"{name}:cpu"] += [(cpu() - cpu_start) / per_round] * per_round
    return times


def summarise(label: str, times: dict[str, list[float]], report: Report) -> Goal:
    """Print medians/p95 and return the ratio goal."""
    osbox_med, raw_med = median(times["osbox"]), median(times["raw"])
    ratio = osbox_med / raw_med
    print(f"\n[{label}] {len(times['osbox'])} calls each")
    for name in ("raw", "osbox"):
        print(
            f"  {name:6s} median {us(median(times[name]))}  p95 {us(percentile(times[name], 95))}"
            f"  mean {us(sum(times[name]) / len(times[name]))}"
        )
    print(f"  overhead per call (median): {us(osbox_med - raw_med)}; ratio {ratio:.3f}")
    osbox_cpu, raw_cpu = median(times["osbox:cpu"]), median(times["raw:cpu"])
    print(
        f"  client CPU per call (median of blocks): raw {us(raw_cpu)}, osbox {us(osbox_cpu)};"
        f" ratio {osbox_cpu / raw_cpu:.3f}"
    )
    report.figures[label] = {
        "calls": len(times["osbox"]),
        "raw_median_us": round(raw_med * 1e6, 1),
        "raw_p95_us": round(percentile(times["raw"], 95) * 1e6, 1),
        "osbox_median_us": round(osbox_med * 1e6, 1),
        "osbox_p95_us": round(percentile(times["osbox"], 95) * 1e6, 1),
        "ratio": round(ratio, 3),
        "raw_cpu_us": round(raw_cpu * 1e6, 1),
        "osbox_cpu_us": round(osbox_cpu * 1e6, 1),
        "cpu_ratio": round(osbox_cpu / raw_cpu, 3),
    }
    return Goal(f"{label} osbox/raw median", ratio, GOAL_RATIO, "<=", "x")


def bench_sync(url: str, rounds: int, per_round: int, report: Report) -> None:
    target = f"{url}/v1/sandboxes/{SANDBOX_ID}"
    with (
        LifecycleClient(url + "/v1", api_key=API_KEY, max_retries=0) as client,
        httpx2.Client(headers=raw_headers(), timeout=30.0) as raw,
    ):

        def raw_call() -> Any:
            response = raw.get(target)
            if response.status_code >= 400:
                raise RuntimeError(response.status_code)
            return json.loads(response.content)

        def osbox_call() -> Any:
            return client.get_sandbox(SANDBOX_ID)

        assert osbox_call().id == SANDBOX_ID and raw_call()["id"] == SANDBOX_ID
        interleave({"raw": raw_call, "osbox": osbox_call}, 1, 200)  # warm-up: connections, caches
        times = interleave({"raw": raw_call, "osbox": osbox_call}, rounds, per_round)
        goal = summarise("sync", times, report)
        report.goals.append(goal)
        if not goal.met:
            print("  profile of 500 osbox calls (cumulative):")
            print(profile_top(lambda: [osbox_call() for _ in range(500)], sort="cumtime"))


async def bench_async(url: str, rounds: int, per_round: int, report: Report) -> None:
    target = f"{url}/v1/sandboxes/{SANDBOX_ID}"
    async with (
        AsyncLifecycleClient(url + "/v1", api_key=API_KEY, max_retries=0) as client,
        httpx2.AsyncClient(headers=raw_headers(), timeout=30.0) as raw,
    ):

        async def raw_call() -> Any:
            response = await raw.get(target)
            if response.status_code >= 400:
                raise RuntimeError(response.status_code)
            return json.loads(response.content)

        async def osbox_call() -> Any:
            return await client.get_sandbox(SANDBOX_ID)

        assert (await osbox_call()).id == SANDBOX_ID and (await raw_call())["id"] == SANDBOX_ID
        await ainterleave({"raw": raw_call, "osbox": osbox_call}, 1, 200)
        times = await ainterleave({"raw": raw_call, "osbox": osbox_call}, rounds, per_round)
        goal = summarise("async", times, report)
        report.goals.append(goal)
        if not goal.met:
            print("  profile of 300 async osbox calls (cumulative):")
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(300):
                await osbox_call()
            profiler.disable()
            print(format_profile(profiler, sort="cumtime"))


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds, per_round = (4, 100) if args.quick else (20, 250)
    report = Report.start("client_overhead", args.quick)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_fixed_server.py")), str(port)],
        start_new_session=True,
    )
    try:
        wait_for_port(port, server)
        url = f"http://127.0.0.1:{port}"
        bench_sync(url, rounds, per_round, report)
        asyncio.run(bench_async(url, rounds, per_round, report))
    finally:
        stop_process(server)
    report.emit()


if __name__ == "__main__":
    main()
