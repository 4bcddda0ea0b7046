"""Sandbox start: from `create_sandbox` to the first line of command output, against `osbox serve`.

Per sandbox, timed in phases with the sync clients against an `osbox serve` subprocess (as root, so
each sandbox runs as its own unprivileged host uid under bubblewrap, as in production):
  create    `LifecycleClient.create_sandbox(...)` (answers once the sandbox is Running)
  endpoint  `get_endpoint(id, 44772)`
  client    `ExecdClient.from_endpoint(endpoint)` (a new connection pool per sandbox, as users do)
  output    `run_command("echo ready")` until the first stdout event
total = the sum (the goal); each sandbox is deleted after (timed apart, not in the total).
Baselines measured in the same run, interleaved with the sandboxes: `bwrap --ro-bind / / --dev /dev
--proc /proc --tmpfs /tmp --unshare-all -- /bin/true` started as an unprivileged user (uid/gid 65534,
no supplementary groups, like the runtime starts bwrap), and bare `/bin/true`.
Goal: p50 total <= 50 ms.

    python benchmarks/bench_sandbox_start.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

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

from osbox import ExecdClient, LifecycleClient

GOAL_P50_S = 0.050
NOBODY = 65534
BWRAP = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
BWRAP += ["--unshare-all", "--", "/bin/true"]
PHASES = ("create", "endpoint", "client", "output", "total", "delete")


def run_timed(argv: list[str], unprivileged: bool) -> float:
    """Seconds to start and reap `argv` (as uid/gid 65534 when `unprivileged` and we are root)."""
    drop: dict[str, Any] = {}
    if unprivileged and os.geteuid() == 0:
        drop = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd="/", **drop)
    return time.perf_counter() - start


def start_one(lifecycle: Any) -> dict[str, float]:
    """Create one sandbox, reach its first output, delete it; seconds per phase."""
    clock = time.perf_counter
    t0 = clock()
    sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
    t1 = clock()
    try:
        if sandbox.status.state != "Running":
            raise RuntimeError(f"sandbox {sandbox.id} is {sandbox.status.state}: {sandbox.status.message}")
        endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
        t2 = clock()
        with ExecdClient.from_endpoint(endpoint) as execd:
            t3 = clock()
            first = None
            with execd.run_command("echo ready") as stream:
                for event in stream:
                    if event.type == "stdout":
                        first = clock()
                        break
            if first is None:
                raise RuntimeError("the command ended without stdout")
    finally:
        t5 = clock()
        lifecycle.delete_sandbox(sandbox.id)
        t6 = clock()
    return {
        "create": t1 - t0,
        "endpoint": t2 - t1,
        "client": t3 - t2,
        "output": first - t3,
        "total": first - t0,
        "delete": t6 - t5,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 8 if args.quick else 50
    report = Report.start("sandbox_start", args.quick)
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    bwrap_times: list[float] = []
    true_times: list[float] = []
    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=60) as lifecycle:
        start_one(lifecycle)  # warm-up: imports, first cgroup, page cache (not counted)
        run_timed(BWRAP, unprivileged=True)
        for _ in range(count):
            bwrap_times.append(run_timed(BWRAP, unprivileged=True))
            true_times.append(run_timed(["/bin/true"], unprivileged=False))
            for name, seconds in start_one(lifecycle).items():
                phases[name].append(seconds)
    print(f"\n{count} sandboxes, one after another (plus one warm-up not counted)")
    print(f"  {'phase':10s} {'p50':>10s} {'p95':>10s}")
    figures: dict[str, float] = {"sandboxes": count}
    rows = [*((name, phases[name]) for name in PHASES), ("bwrap", bwrap_times), ("/bin/true", true_times)]
    for name, values in rows:
        p50, p95 = median(values), percentile(values, 95)
        print(f"  {name:10s} {ms(p50):>10s} {ms(p95):>10s}")
        figures[f"{name}_p50_ms"] = round(p50 * 1000, 2)
        figures[f"{name}_p95_ms"] = round(p95 * 1000, 2)
    ratio = median(phases["total"]) / median(bwrap_times)
    print(f"  total p50 / bare bwrap p50: {ratio:.1f}x")
    figures["total_vs_bwrap"] = round(ratio, 2)
    report.figures["start"] = figures
    report.goals.append(Goal("p50 create -> first output", median(phases["total"]) * 1000, 50, "<=", " ms"))
    report.emit()


if __name__ == "__main__":
    main()
