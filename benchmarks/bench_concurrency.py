"""100 concurrent sandboxes: create, run one command each, with the async clients and `asyncio.gather`.

Against an `osbox serve` subprocess: 100 tasks at once, each `create_sandbox` -> `get_endpoint(44772)`
-> `AsyncExecdClient.from_endpoint` -> `run_command("echo hello-<i>").run()`, checking the output
and exit code. One shared `AsyncLifecycleClient` (its pool allows 100 connections), one execd client
per sandbox. Failures are reported with their errors; every sandbox created is deleted afterwards
(concurrently too), and the server is asked to list what is left, which must be nothing.
Goal: 100/100 succeed.

    python benchmarks/bench_concurrency.py [--quick]
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx2
from _common import (
    SANDBOX_ARGS,
    Goal,
    Report,
    median,
    ms,
    osbox_server,
    parse_args,
    percentile,
)

from osbox import AsyncExecdClient, AsyncLifecycleClient


async def one(lifecycle: Any, index: int, created: list[str]) -> float:
    """Create a sandbox and run one command in it; returns seconds from start to the result."""
    start = time.perf_counter()
    sandbox = await lifecycle.create_sandbox(**SANDBOX_ARGS)
    created.append(sandbox.id)
    if sandbox.status.state != "Running":
        raise RuntimeError(f"state {sandbox.status.state}: {sandbox.status.message}")
    endpoint = await lifecycle.get_endpoint(sandbox.id, 44772)
    async with AsyncExecdClient.from_endpoint(endpoint, timeout=120) as execd:
        result = await execd.run_command(f"echo hello-{index}").run()
    if result.exit_code != 0 or result.stdout != f"hello-{index}\n":
        raise RuntimeError(f"unexpected result: exit {result.exit_code}, stdout {result.stdout!r}")
    return time.perf_counter() - start


async def run(url: str, count: int, report: Report) -> None:
    limits = httpx2.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    http = httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(300.0, connect=60.0))
    created: list[str] = []
    async with AsyncLifecycleClient(url, http_client=http, max_retries=0) as lifecycle:
        try:
            start = time.perf_counter()
            outcomes = await asyncio.gather(
                *(one(lifecycle, i, created) for i in range(count)), return_exceptions=True
            )
            wall = time.perf_counter() - start
        finally:
            cleanup_start = time.perf_counter()
            deleted = await asyncio.gather(
                *(lifecycle.delete_sandbox(sid) for sid in created), return_exceptions=True
            )
            cleanup = time.perf_counter() - cleanup_start
            left = [s.id async for s in lifecycle.iter_sandboxes(state=["Running", "Pending", "Paused"])]
        await http.aclose()
    durations = [o for o in outcomes if isinstance(o, float)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    delete_errors = [d for d in deleted if isinstance(d, BaseException)]
    print(f"\n{count} concurrent create + command: {len(durations)}/{count} succeeded in {wall:.2f} s wall")
    if durations:
        print(f"  per sandbox: p50 {ms(median(durations))}, p95 {ms(percentile(durations, 95))}")
    for message, n in Counter(f"{type(e).__name__}: {e}" for e in errors).most_common():
        print(f"  FAILED x{n}: {message[:300]}")
    print(
        f"  cleanup: {len(created)} created, {len(created) - len(delete_errors)} deleted in {cleanup:.2f} s"
    )
    for message, n in Counter(f"{type(e).__name__}: {e}" for e in delete_errors).most_common():
        print(f"  DELETE FAILED x{n}: {message[:300]}")
    print(f"  sandboxes still live on the server after cleanup: {len(left)}")
    report.figures["concurrency"] = {
        "count": count,
        "succeeded": len(durations),
        "wall_s": round(wall, 2),
        "p50_s": round(median(durations), 3) if durations else None,
        "p95_s": round(percentile(durations, 95), 3) if durations else None,
        "errors": [f"{type(e).__name__}: {e}"[:300] for e in errors],
        "created": len(created),
        "delete_errors": len(delete_errors),
        "left_after_cleanup": len(left),
        "cleanup_s": round(cleanup, 2),
    }
    report.goals.append(Goal(f"succeeded of {count}", len(durations), count, ">="))
    report.goals.append(Goal("sandboxes left after cleanup", len(left), 0, "<="))


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 10 if args.quick else 100
    report = Report.start("concurrency", args.quick)
    with osbox_server() as server:
        asyncio.run(run(server.lifecycle_url, count, report))
    report.emit()


if __name__ == "__main__":
    main()
