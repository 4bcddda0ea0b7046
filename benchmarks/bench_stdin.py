"""Stdin throughput: bytes fed to a command through `ExecdClient.run_command(stdin=...)` per second.

Against an `osbox serve` subprocess and one sandbox: SIZE bytes of random data (in memory) are fed
to `wc -c` in the sandbox, once as one `bytes` object and once as an iterator of 1 MiB chunks; the
command's count is checked. Baseline in the same run: the same bytes written into a host pipe to
`wc -c` (one `write` of the whole buffer into its stdin): what the machine does without HTTP, the
server and the sandbox. MB = 10^6 bytes. Goal: >= 0.25x the host pipe (the bytes cross HTTP,
the server's event loop and a second pipe into the sandbox).

    python benchmarks/bench_stdin.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

from _common import SANDBOX_ARGS, Goal, Report, median, mib, osbox_server, parse_args

from osbox import ExecdClient, LifecycleClient

CHUNK = 2**20
GOAL_RATIO = 0.25
RUNS = 3


def best_of(runs: int, fn: Callable[[], int], size: int) -> float:
    """The median MB/s of `runs` calls of `fn`, each of which must report `size` bytes."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        counted = fn()
        seconds = time.perf_counter() - start
        if counted != size:
            raise SystemExit(f"wc -c counted {counted} bytes, not {size}")
        rates.append(size / 1e6 / seconds)
    return median(rates)


def main() -> None:
    args = parse_args(__doc__ or "")
    size = 64 * 2**20 if args.quick else 512 * 2**20
    report = Report.start("stdin", args.quick)
    data = os.urandom(size)

    def host_pipe() -> int:
        # One blocking write of the whole buffer (communicate() would write 512 bytes per select()).
        with subprocess.Popen(["wc", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as wc:
            assert wc.stdin is not None and wc.stdout is not None
            wc.stdin.write(data)
            wc.stdin.close()
            return int(wc.stdout.read())

    def chunks() -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, size, CHUNK):
            yield bytes(view[start : start + CHUNK])

    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=120) as lifecycle:
        sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
        endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
        with ExecdClient.from_endpoint(endpoint, timeout=900) as execd:

            def through_sdk(source: Callable[[], object]) -> Callable[[], int]:
                def run() -> int:
                    return int(execd.run_command("wc -c", stdin=source()).run().stdout)  # type: ignore[arg-type]

                return run

            pipe_mbps = best_of(RUNS, host_pipe, size)
            bytes_mbps = best_of(RUNS, through_sdk(lambda: data), size)
            chunked_mbps = best_of(RUNS, through_sdk(chunks), size)
        lifecycle.delete_sandbox(sandbox.id)
    print(f"\n{mib(size)} into `wc -c`, median of {RUNS}")
    print(f"  SDK stdin=bytes        {bytes_mbps:8.1f} MB/s  ({bytes_mbps / pipe_mbps:.2f}x the host pipe)")
    print(
        f"  SDK stdin=1 MiB chunks {chunked_mbps:8.1f} MB/s  ({chunked_mbps / pipe_mbps:.2f}x the host pipe)"
    )
    print(f"  host pipe              {pipe_mbps:8.1f} MB/s  (baseline: subprocess wc -c, same bytes)")
    report.figures["stdin"] = {
        "mib": size // 2**20,
        "sdk_bytes_mbps": round(bytes_mbps, 1),
        "sdk_chunks_mbps": round(chunked_mbps, 1),
        "host_pipe_mbps": round(pipe_mbps, 1),
    }
    report.goals += [
        Goal("stdin=bytes vs host pipe", bytes_mbps / pipe_mbps, GOAL_RATIO, ">=", "x"),
        Goal("stdin=chunks vs host pipe", chunked_mbps / pipe_mbps, GOAL_RATIO, ">=", "x"),
    ]
    report.emit()


if __name__ == "__main__":
    main()
