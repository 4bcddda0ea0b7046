"""Run every benchmark (`make bench`), each in its own interpreter, and print a summary of the goals.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--json results.json]

Each benchmark's report is shown as it runs; its last line, `BENCH-RESULT {json}`, is collected.
Exit status: 0 when every benchmark ran (missed goals are reported, not failures), 1 when one crashed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULT_PREFIX, machine_facts

HERE = Path(__file__).resolve().parent
#: In the order they run: the cheap client-side ones first, the heavy server ones last.
BENCHMARKS = [
    "client_overhead",
    "stream_parse",
    "import",
    "sandbox_start",
    "image_disk",
    "concurrency",
    "memory",
    "files",
    "stdin",
    "code",
    "pty",
    "egress",
    "hostnet",
    "sandbox_network",
    "credential_proxy",
    "output",
]


def run_one(name: str, quick: bool) -> tuple[dict[str, Any] | None, int, float]:
    """Run `bench_<name>.py`, echoing its output; returns (its result, exit code, seconds)."""
    command = [sys.executable, "-u", str(HERE / f"bench_{name}.py")] + (["--quick"] if quick else [])
    print(f"\n===== {name} =====", flush=True)
    start = time.monotonic()
    result: dict[str, Any] | None = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=HERE.parent) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
            else:
                print(line, end="", flush=True)
    return result, proc.returncode, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and counts (smoke run)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    args = parser.parse_args()
    machine = machine_facts()
    print(f"machine: {machine}")
    results: dict[str, Any] = {}
    failed = []
    for name in args.only or BENCHMARKS:
        result, code, seconds = run_one(name, args.quick)
        if code != 0 or result is None:
            failed.append(name)
            print(f"!!! {name} failed (exit {code})", flush=True)
        results[name] = {"result": result, "exit": code, "seconds": round(seconds, 1)}
    print("\n===== summary =====")
    print(f"machine: {machine}; load after: {machine_facts()['load']}")
    for name, entry in results.items():
        result = entry["result"]
        if result is None:
            print(f"{name:16s} FAILED (exit {entry['exit']}, {entry['seconds']} s)")
            continue
        print(f"{name:16s} ran in {entry['seconds']} s")
        for goal in result["goals"]:
            verdict = "MET   " if goal["met"] else "MISSED"
            bound = f"{goal['op']} {goal['bound']:g}"
            print(f"    {verdict} {goal['name']}: {goal['value']:.3f}{goal['unit']} ({bound})")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
