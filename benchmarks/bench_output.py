"""End-to-end command output: a command's stdout into a `Sandbox.run` result, against the same command
run on the host into a pipe, in the same run.

osbox (an `osbox serve` subprocess, one sandbox, the sync SDK, as a user meets it):
  exact       `sandbox.run(cmd)`: osbox's exact framing (what the SDK asks for), folded into `stdout`
  lines       `sandbox.execd.run_command(cmd, framing="lines").run()`: the reference's framing
  background  `sandbox.spawn(cmd).wait()`: the log route (`/command/{id}/logs`), polled; only for `seq`
              (the log keeps the newest 64 MiB, so 200 MB cannot come back whole)
baseline: `subprocess.run(["bash", "-c", cmd], capture_output=True)` on the host, the bytes read
whole from the pipe (what the sandbox adds is the difference). Each way is timed until the user holds
the output (`Execution.stdout`, a `str`; the pipe's `bytes`); the first round of each also checks that
it is byte for byte the host's. Beside each osbox way, the CPU time it took (median): the server
process's (psutil) and this client's (`getrusage`); the command's own is in neither.

Workloads: `seq 1 5000000` (38.9 MB, 5 M lines) and 200 MB of 100-byte lines (`yes` of a 99-byte
line, `head -n 2000000`). Each is run `--rounds` times per way, interleaved; medians are reported.
Goals (issue 9): the exact framing through `Sandbox.run` at >= 0.5x the host pipe's throughput and
>= 200 MB/s, and >= 2 M lines/s for `seq`.

    python benchmarks/bench_output.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]
from _common import Goal, Report, median, osbox_server, parse_args

from osbox import Sandbox

WORKLOADS = {
    "seq": ("seq 1 5000000", 5_000_000),
    "lines100": ("yes \"$(printf '%099d' 0)\" | head -n 2000000", 2_000_000),
}
QUICK_WORKLOADS = {
    "seq": ("seq 1 500000", 500_000),
    "lines100": ("yes \"$(printf '%099d' 0)\" | head -n 200000", 200_000),
}


#: A background command's log keeps its newest 64 MiB: a bigger output cannot come back whole.
BACKGROUND_MAX_BYTES = 48_000_000


def host_pipe(command: str) -> bytes:
    """The command's stdout read through a pipe on the host."""
    return subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout


def client_cpu() -> float:
    """CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(process: psutil.Process) -> float:
    """CPU seconds `process` has used (itself, not its children)."""
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class Timing:
    """One run of one way: wall seconds, and the CPU seconds the server and this client spent."""

    seconds: float
    server_cpu: float
    client_cpu: float


def timed(run: Callable[[], int], server: psutil.Process) -> tuple[Timing, int]:
    """How long `run` took, and the size it returns."""
    server_began, client_began = process_cpu(server), client_cpu()
    began = time.perf_counter()
    size = run()
    seconds = time.perf_counter() - began
    return Timing(seconds, process_cpu(server) - server_began, client_cpu() - client_began), size


def measure(
    sandbox: Sandbox, command: str, rounds: int, host_output: bytes, server: psutil.Process
) -> dict[str, list[Timing]]:
    """A timing per round for each way of running `command`, each until the user holds its output (a
    `str` from the SDK, `bytes` from the pipe). Every round checks the size; the first, the bytes."""
    checked = False

    def received(stdout: str) -> int:
        nonlocal checked
        if not checked:
            assert stdout.encode("utf-8", "surrogateescape") == host_output, "output differs from the host's"
        return len(stdout)  # the workloads are ASCII: characters are bytes

    def exact() -> int:
        result = sandbox.run(command)
        assert result.exit_code == 0, result.stderr[-500:]
        return received(result.stdout)

    def lines() -> int:
        result = sandbox.execd.run_command(command, framing="lines").run()
        assert result.exit_code == 0, result.stderr[-500:]
        return received(result.stdout)

    def background() -> int:
        return received(sandbox.spawn(command).wait(check=True).stdout)

    ways: dict[str, Callable[[], int]] = {
        "host_pipe": lambda: len(host_pipe(command)),
        "exact": exact,
        "lines": lines,
    }
    if len(host_output) <= BACKGROUND_MAX_BYTES:
        ways["background"] = background
    times: dict[str, list[Timing]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            timing, size = timed(run, server)
            assert size == len(host_output), f"{name}: {size} bytes, expected {len(host_output)}"
            times[name].append(timing)
        checked = True
    return times


def extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way per workload")


def main() -> None:
    args = parse_args(__doc__ or "", extra)
    rounds = 1 if args.quick else args.rounds
    report = Report.start("output", args.quick)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    with osbox_server() as server, Sandbox.create(base_url=server.lifecycle_url, timeout=300) as sandbox:
        server_process = psutil.Process(server.proc.pid)
        for name, (command, n_lines) in workloads.items():
            output = host_pipe(command)
            size = len(output)
            measure(sandbox, command, 1, output, server_process)  # warm-up, and the bytes checked
            times = measure(sandbox, command, rounds, output, server_process)
            host = median([timing.seconds for timing in times["host_pipe"]])
            print(f"\n{name}: `{command}` -> {size / 1e6:.1f} MB, {n_lines} lines; median of {rounds}")
            figures: dict[str, float] = {"bytes": size, "lines": n_lines}
            for way, timings in times.items():
                seconds = median([timing.seconds for timing in timings])
                mb_s, lines_s, ratio = size / seconds / 1e6, n_lines / seconds, host / seconds
                cpu = ""
                if way != "host_pipe":
                    server_cpu = median([timing.server_cpu for timing in timings])
                    client_cpu_s = median([timing.client_cpu for timing in timings])
                    cpu = f"  CPU server {server_cpu:5.2f} s, client {client_cpu_s:5.2f} s"
                    figures[f"{way}_server_cpu_s"] = round(server_cpu, 3)
                    figures[f"{way}_client_cpu_s"] = round(client_cpu_s, 3)
                print(
                    f"  {way:11s} {seconds * 1000:9.1f} ms  {mb_s:8.1f} MB/s  "
                    f"{lines_s / 1e6:6.2f} M lines/s  {ratio:5.2f}x host pipe{cpu}"
                )
                figures[f"{way}_ms"] = round(seconds * 1000, 1)
                figures[f"{way}_mb_s"] = round(mb_s, 1)
                figures[f"{way}_vs_host"] = round(ratio, 3)
            report.figures[name] = figures
            exact = median([timing.seconds for timing in times["exact"]])
            report.goals.append(Goal(f"{name} Sandbox.run vs host pipe", host / exact, 0.5, ">=", "x"))
            mb_s = size / exact / 1e6
            report.goals.append(Goal(f"{name} Sandbox.run throughput", mb_s, 200, ">=", " MB/s"))
            if name == "seq":
                lines_s = n_lines / exact / 1e6
                report.goals.append(Goal("seq Sandbox.run lines per second", lines_s, 2, ">=", " M/s"))
    report.emit()


if __name__ == "__main__":
    main()
