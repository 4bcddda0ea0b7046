"""Shared helpers of the benchmarks: arguments, statistics, machine facts, result lines, server process.

Every benchmark prints a human-readable report and, last, one line `BENCH-RESULT {json}` that
`run_all.py` collects into its summary. Nothing here is part of osbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "
#: What every benchmark sandbox is created with: an idle entrypoint; a 10-minute lifetime, so a
#: sandbox that cleanup somehow missed still expires.
#: Every sandbox of the benchmarks: the tests' Debian image (`image_mirror`), idling.
SANDBOX_ARGS: dict[str, Any] = {"image": "python:3.11", "entrypoint": ["sleep", "infinity"], "timeout": 600}


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> Any:
    """The common command line: `--quick` for a small smoke run, plus a benchmark's own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="shrink sizes and counts for a fast smoke run")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


# -- statistics -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median (statistics.median, named here so callers import one module)."""
    return statistics.median(values)


def ms(seconds: float) -> str:
    """Seconds shown as milliseconds."""
    return f"{seconds * 1000:.2f} ms"


def us(seconds: float) -> str:
    """Seconds shown as microseconds."""
    return f"{seconds * 1e6:.1f} µs"


def mib(n_bytes: float) -> str:
    """Bytes shown as MiB."""
    return f"{n_bytes / 2**20:.1f} MiB"


# -- results --------------------------------------------------------------------------------------


@dataclass
class Goal:
    """One goal of a benchmark: a measured value, the bound, and whether it is met."""

    name: str
    value: float
    bound: float
    #: "<=" or ">=".
    op: str
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.bound if self.op == "<=" else self.value >= self.bound

    def line(self) -> str:
        verdict = "MET" if self.met else "MISSED"
        goal = f"goal {self.op} {self.bound:g}{self.unit}"
        return f"{self.name}: {self.value:.3f}{self.unit} ({goal}) {verdict}"


@dataclass
class Report:
    """What one benchmark run found: figures for the summary and the goals."""

    bench: str
    quick: bool
    figures: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, bench: str, quick: bool) -> Report:
        """A report for `bench` that records (and prints) the machine it runs on."""
        report = cls(bench, quick)
        report.figures["machine"] = machine_facts()
        print(f"machine: {report.figures['machine']}")
        return report

    def emit(self) -> None:
        """Print the goals and the machine-readable result line."""
        print()
        for goal in self.goals:
            print("GOAL " + goal.line())
        for note in self.notes:
            print("NOTE " + note)
        payload = {
            "bench": self.bench,
            "quick": self.quick,
            "load": os.getloadavg(),
            "figures": self.figures,
            "goals": [{**goal.__dict__, "met": goal.met} for goal in self.goals],
            "notes": self.notes,
        }
        print(RESULT_PREFIX + json.dumps(payload), flush=True)


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "commit": _commit(),
    }


def _commit() -> str:
    """The checked-out commit, `+dirty` when `src/` has uncommitted changes (others' work in progress)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "src").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[Any], deadline_s: float = 60.0) -> None:
    """Poll until something accepts on 127.0.0.1:port; fail early if `proc` died."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)  # polling a condition with a deadline, not synchronising on time
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {deadline_s}s")


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL the process group if it will not go."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class ServerProcess:
    """An `osbox serve` subprocess with its own temporary data dir."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lifecycle_url(self) -> str:
        return self.base_url + "/v1"

    def rss(self) -> int:
        """Resident set size of the server process itself (bytes)."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of the server's log, for error reports."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""


#: Where the benchmarks' Debian image and image store are cached (the tests' cache: built once).
IMAGE_CACHE = Path(os.environ.get("OSBOX_TEST_IMAGE_CACHE", Path.home() / ".cache" / "osbox-test-images"))


@contextlib.contextmanager
def image_mirror() -> Iterator[None]:
    """Sandboxes of `python:3.11` run the Debian image the tests build, served from a local registry
    and already in the image store, as for the tests: the environment of this process (and the servers
    it starts) points `osbox serve` at them."""
    from osbox.server.images.debian import debian_environment

    with debian_environment(IMAGE_CACHE, ["library/python:3.11"]):
        yield


@contextlib.contextmanager
def osbox_server(*options: str) -> Iterator[ServerProcess]:
    """`_osbox_server` with the benchmarks' image mirror (see `image_mirror`)."""
    with image_mirror(), _osbox_server(*options) as server:
        yield server


@contextlib.contextmanager
def _osbox_server(*options: str) -> Iterator[ServerProcess]:
    """Run `python -m osbox.cli serve [options]` as a subprocess on a free port; clean everything up after.

    A subprocess rather than the in-process `LocalServer`, so the server's memory is measurable on its
    own and the benchmark client does not share the server's interpreter lock. `osbox serve` keeps its
    sandboxes running when stopped (it re-adopts them on restart), so on exit every sandbox is deleted
    through the API first; then the server is stopped, any process it started that is still alive is
    killed, and the data dir is removed.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="osbox-bench-"))
    log_path = data_dir.parent / (data_dir.name + ".log")
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        # No network unless asked (`options`): the figures compare with runs before networks were the
        # default, and the machine's own network stays untouched.
        [
            *(sys.executable, "-m", "osbox.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)),
            *("--network", "none"),
            *options,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ServerProcess(proc, port, data_dir, log_path)
    try:
        wait_for_port(port, proc)
        yield server
    finally:
        try:
            leftovers = delete_all_sandboxes(server.lifecycle_url) if proc.poll() is None else 0
            if leftovers:
                print(f"cleanup: deleted {leftovers} sandboxes left behind", file=sys.stderr)
        finally:
            descendants = _descendants(proc.pid)
            stop_process(proc)
            _kill_survivors(descendants)
            log.close()
            shutil.rmtree(data_dir, ignore_errors=True)
            if proc.returncode not in (0, -signal.SIGTERM):
                print(
                    f"server exited with {proc.returncode}; log tail:\n{server.log_tail()}", file=sys.stderr
                )
            log_path.unlink(missing_ok=True)


def delete_all_sandboxes(lifecycle_url: str) -> int:
    """Delete every sandbox the server knows (any state); returns how many there were."""
    from osbox import LifecycleClient, NotFoundError

    with LifecycleClient(lifecycle_url, timeout=120) as client:
        ids = [sandbox.id for sandbox in client.iter_sandboxes(page_size=200)]
        for sandbox_id in ids:
            with contextlib.suppress(NotFoundError):
                client.delete_sandbox(sandbox_id)
    return len(ids)


def _descendants(pid: int) -> list[Any]:
    try:
        found: list[Any] = psutil.Process(pid).children(recursive=True)
        return found
    except psutil.NoSuchProcess:
        return []


def _kill_survivors(procs: list[Any]) -> None:
    """Kill processes the server started that outlived it (there should be none)."""
    alive = [p for p in procs if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if alive:
        psutil.wait_procs(alive, timeout=5)
        print(f"cleanup: killed {len(alive)} processes that outlived the server", file=sys.stderr)


def tree_memory(pid: int) -> dict[str, int]:
    """RSS and PSS (bytes) of a process and all its descendants; processes that vanish are skipped."""
    rss = pss = count = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"rss": 0, "pss": 0, "processes": 0}
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return {"rss": rss, "pss": pss, "processes": count}


def profile_top(fn: Callable[[], object], limit: int = 18, sort: str = "tottime") -> str:
    """Run `fn` under cProfile and return the top entries, to show what dominates."""
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    return format_profile(profiler, limit, sort)


def format_profile(profiler: Any, limit: int = 18, sort: str = "tottime") -> str:
    """The top entries of a stopped `cProfile.Profile`, without pstats' preamble."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(limit)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])
