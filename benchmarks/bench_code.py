"""Code contexts: a kernel's start and a cell's round trip through `osbox serve`, against the same
kernel driven by `jupyter_client` directly (no sandbox, no HTTP) in the same run.

osbox (an `osbox serve` subprocess, one sandbox, the sync `ExecdClient`):
  context   `create_context(language="python")`: ipykernel started in the sandbox, connected, ready
  cell      `execute_code("1 + 1", context_id=...).run()`: HTTP + stream + kernel round trip
baseline (the same `python3 -m ipykernel_launcher`, started by `jupyter_client.KernelManager` on the host):
  start     `start_kernel()` + `wait_for_ready()`
  cell      `execute("1 + 1")` and wait for the `status: idle` message
No goal is set for these; the ratios say what the sandbox and the HTTP stream add.

    python benchmarks/bench_code.py [--quick]
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from _common import SANDBOX_ARGS, Report, median, ms, osbox_server, parse_args, percentile

from osbox import ExecdClient, LifecycleClient

KERNEL_PYTHON = "python3"  # what the sandboxes run too (Debian's, with python3-ipykernel)


def baseline(starts: int, cells: int) -> tuple[list[float], list[float]]:
    """Kernel start and cell round-trip times of a kernel on the host, driven by jupyter_client."""
    from jupyter_client.manager import KernelManager

    start_times: list[float] = []
    cell_times: list[float] = []
    for n in range(starts):
        manager = KernelManager(
            kernel_cmd=[KERNEL_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        )
        began = time.perf_counter()
        manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        start_times.append(time.perf_counter() - began)
        try:
            if n == 0:
                for _ in range(cells):
                    began = time.perf_counter()
                    msg_id = client.execute("1 + 1")
                    while True:
                        message: dict[str, Any] = client.get_iopub_msg(timeout=30)
                        idle = message["content"].get("execution_state") == "idle"
                        if idle and message["parent_header"].get("msg_id") == msg_id:
                            break
                    cell_times.append(time.perf_counter() - began)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return start_times, cell_times


def through_osbox(execd: ExecdClient, starts: int, cells: int) -> tuple[list[float], list[float]]:
    """Context creation and cell round-trip times through `osbox serve`."""
    start_times: list[float] = []
    cell_times: list[float] = []
    for n in range(starts):
        began = time.perf_counter()
        context = execd.create_context(language="python")
        assert context.id
        start_times.append(time.perf_counter() - began)
        try:
            if n == 0:
                for _ in range(cells):
                    began = time.perf_counter()
                    result = execd.execute_code("1 + 1", context_id=context.id).run()
                    cell_times.append(time.perf_counter() - began)
                    assert result.results == [{"text": "2"}], result
        finally:
            execd.delete_context(context.id)
    return start_times, cell_times


def main() -> None:
    args = parse_args(__doc__ or "")
    starts, cells = (2, 20) if args.quick else (5, 200)
    report = Report.start("code", args.quick)
    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=60) as lifecycle:
        sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
        with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772), timeout=60) as execd:
            through_osbox(execd, 1, 5)  # warm-up: imports, page cache (not counted)
            baseline(1, 5)
            osbox_starts, osbox_cells = through_osbox(execd, starts, cells)
            base_starts, base_cells = baseline(starts, cells)
        lifecycle.delete_sandbox(sandbox.id)
    figures: dict[str, float] = {"kernel_starts": starts, "cells": cells}
    print(f"\n{starts} kernel starts and {cells} cells each way (plus a warm-up not counted)")
    print(f"  {'':28s} {'p50':>10s} {'p95':>10s}")
    rows = [
        ("osbox context create", "osbox_context", osbox_starts),
        ("jupyter_client kernel start", "raw_start", base_starts),
        ("osbox cell round trip", "osbox_cell", osbox_cells),
        ("jupyter_client cell", "raw_cell", base_cells),
    ]
    for label, key, values in rows:
        p50, p95 = median(values), percentile(values, 95)
        print(f"  {label:28s} {ms(p50):>10s} {ms(p95):>10s}")
        figures[f"{key}_p50_ms"] = round(p50 * 1000, 2)
        figures[f"{key}_p95_ms"] = round(p95 * 1000, 2)
    figures["context_vs_raw_start"] = round(median(osbox_starts) / median(base_starts), 2)
    figures["cell_vs_raw_cell"] = round(median(osbox_cells) / median(base_cells), 2)
    print(
        f"  context create / raw start {figures['context_vs_raw_start']:.2f}x, "
        f"cell / raw cell {figures['cell_vs_raw_cell']:.2f}x"
    )
    report.figures["code"] = figures
    report.emit()


if __name__ == "__main__":
    main()
