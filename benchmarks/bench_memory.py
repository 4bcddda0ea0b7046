"""Memory of 100 idle sandboxes: what `osbox serve` and everything it started add, vs before.

An `osbox serve` subprocess (`python -m osbox.cli serve --port N --data-dir <tmp>`). Before: its RSS
and the RSS/PSS of its whole process tree, after one warm-up sandbox was created and deleted (so
lazily imported server modules count as baseline, not as per-sandbox cost). Then 100 sandboxes
are created one after another, each runs `true` once through execd (so per-sandbox execd state
exists), and they sit idle. After: the same figures, once the tree has settled (two samples 1 s
apart within 2 %, or after 10 s). The tree is the server process and every descendant (bwrap, the
in-sandbox agent, the entrypoints, ...): psutil `memory_full_info` per process. RSS counts shared
pages once per process (an overestimate of the total); PSS splits shared pages between their users
(the fair total), so the goal uses PSS. Goal: <= 1 GiB added for 100 sandboxes.

    python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import time
from typing import Any

from _common import (
    SANDBOX_ARGS,
    Goal,
    Report,
    ServerProcess,
    mib,
    osbox_server,
    parse_args,
    tree_memory,
)

from osbox import ExecdClient, LifecycleClient

GOAL_BYTES = 2**30


def settled(server: ServerProcess, max_wait_s: float = 10.0) -> dict[str, int]:
    """Tree memory once two samples a second apart agree within 2 % (or after `max_wait_s`)."""
    deadline = time.monotonic() + max_wait_s
    previous = tree_memory(server.proc.pid)
    while True:
        time.sleep(1.0)  # sampling interval of a measurement, not synchronisation
        current = tree_memory(server.proc.pid)
        if abs(current["pss"] - previous["pss"]) <= 0.02 * previous["pss"] or time.monotonic() > deadline:
            current["server_rss"] = server.rss()
            return current
        previous = current


def create_idle(lifecycle: Any) -> str:
    """One sandbox that has run one command and is now idle; returns its id."""
    sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
    if sandbox.status.state != "Running":
        raise RuntimeError(f"sandbox {sandbox.id} is {sandbox.status.state}: {sandbox.status.message}")
    with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772)) as execd:
        result = execd.run_command("true").run()
        if result.exit_code != 0:
            raise RuntimeError(f"`true` failed in {sandbox.id}: {result}")
    sid: str = sandbox.id
    return sid


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 10 if args.quick else 100
    report = Report.start("memory", args.quick)
    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=120) as lifecycle:
        lifecycle.delete_sandbox(create_idle(lifecycle))  # warm-up
        before = settled(server)
        ids = []
        try:
            for _ in range(count):
                ids.append(create_idle(lifecycle))
            after = settled(server)
        finally:
            for sid in ids:
                lifecycle.delete_sandbox(sid)
        cleaned = settled(server)
    added = {key: after[key] - before[key] for key in ("server_rss", "rss", "pss", "processes")}
    print(f"\n{count} idle sandboxes")
    print(f"  {'':28s} {'before':>12s} {'with sandboxes':>15s} {'added':>12s} {'per sandbox':>12s}")
    for key, label in (
        ("server_rss", "server process RSS"),
        ("rss", "tree RSS (sum)"),
        ("pss", "tree PSS (sum)"),
    ):
        print(
            f"  {label:28s} {mib(before[key]):>12s} {mib(after[key]):>15s} {mib(added[key]):>12s}"
            f" {mib(added[key] / count):>12s}"
        )
    print(f"  {'processes in the tree':28s} {before['processes']:>12d} {after['processes']:>15d}")
    print(
        f"  after deleting them all: server RSS {mib(cleaned['server_rss'])}, tree PSS {mib(cleaned['pss'])}"
    )
    report.figures["memory"] = {
        "sandboxes": count,
        **{f"before_{k}_mib": round(v / 2**20, 1) for k, v in before.items() if k != "processes"},
        **{f"after_{k}_mib": round(v / 2**20, 1) for k, v in after.items() if k != "processes"},
        "processes_before": before["processes"],
        "processes_after": after["processes"],
        "added_pss_mib": round(added["pss"] / 2**20, 1),
        "added_rss_mib": round(added["rss"] / 2**20, 1),
        "added_server_rss_mib": round(added["server_rss"] / 2**20, 1),
        "server_rss_after_cleanup_mib": round(cleaned["server_rss"] / 2**20, 1),
    }
    scale = 100 / count  # --quick: scale the goal to the smaller count
    report.goals.append(
        Goal(
            f"tree PSS added by {count} sandboxes",
            added["pss"] / 2**20,
            GOAL_BYTES / 2**20 / scale,
            "<=",
            " MiB",
        )
    )
    report.emit()


if __name__ == "__main__":
    main()
