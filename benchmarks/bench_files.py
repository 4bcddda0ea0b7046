"""A 1 GiB file round trip through execd: `upload_file` from disk, `download_file` to disk.

Against an `osbox serve` subprocess and one sandbox: a 1 GiB file of random bytes is written to a
temp dir (SHA-256 computed while writing), uploaded to `/workspace/big.bin` (the sandbox's on-disk
workspace), checked inside the sandbox with `sha256sum`, downloaded to another local file and checked
again. While each transfer runs, a background thread samples the RSS of the server process (every
20 ms); growth = peak minus the value just before the transfer. Baseline in the same run: a local
`shutil.copyfile` of the same file on the same disk (what the disk and page cache give without HTTP).
MB = 10^6 bytes. Goals: >= 300 MB/s each way; server RSS growth <= 64 MB during each transfer.

    python benchmarks/bench_files.py [--quick]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from _common import SANDBOX_ARGS, Goal, Report, ServerProcess, mib, osbox_server, parse_args

from osbox import ExecdClient, LifecycleClient

GOAL_MBPS = 300.0
GOAL_RSS_GROWTH = 64 * 2**20
BLOCK = 4 * 2**20
REMOTE = "/workspace/big.bin"


def write_random_file(path: Path, size: int) -> str:
    """`size` random bytes into `path`; returns their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, BLOCK):
            block = os.urandom(min(BLOCK, size - offset))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """SHA-256 of a local file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _runtime_cpu(server: ServerProcess) -> float:
    """CPU seconds used so far by the server and every process it started (the in-sandbox agent too)."""
    total = 0.0
    root = psutil.Process(server.proc.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@contextmanager
def rss_sampler(server: ServerProcess, interval_s: float = 0.02) -> Iterator[dict[str, float]]:
    """Samples the server's RSS in a thread while the block runs.

    Yields {"before", "peak"} (bytes), filled in as it goes, plus the CPU seconds the server process
    and the processes it started ("server_cpu") and this client process ("client_cpu") spent in the
    block: which side is busy.
    """
    result: dict[str, float] = {"before": server.rss()}
    result["peak"] = result["before"]
    server_cpu, client_cpu = _runtime_cpu(server), time.process_time()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            result["peak"] = max(result["peak"], server.rss())

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(result["peak"], server.rss())
        result["server_cpu"] = _runtime_cpu(server) - server_cpu
        result["client_cpu"] = time.process_time() - client_cpu


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args(__doc__ or "")
    size = 64 * 2**20 if args.quick else 2**30
    report = Report.start("files", args.quick)
    work = Path(tempfile.mkdtemp(prefix="osbox-bench-files-"))
    try:
        free = shutil.disk_usage(work).free
        # Local source, local copy, downloaded copy, the sandbox's copy, plus 1 GiB to spare.
        if free < 4 * size + 2**30:
            raise SystemExit(f"not enough disk in {work}: {mib(free)} free, need {mib(4 * size + 2**30)}")
        source, copy, downloaded = work / "source.bin", work / "copy.bin", work / "downloaded.bin"
        print(f"writing {mib(size)} of random bytes to {source} ...", flush=True)
        expected = write_random_file(source, size)
        copy_s = timed(lambda: shutil.copyfile(source, copy))
        copy.unlink()
        with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=120) as lifecycle:
            sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
            endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
            with ExecdClient.from_endpoint(endpoint, timeout=900) as execd:
                with rss_sampler(server) as up_rss:
                    up_s = timed(lambda: execd.upload_file(REMOTE, source))
                check = execd.run_command(f"sha256sum {REMOTE}").run()
                remote_sum = check.stdout.split()[0] if check.stdout else f"<failed: {check}>"
                with rss_sampler(server) as down_rss:
                    down_s = timed(lambda: execd.download_file(REMOTE, downloaded))
            lifecycle.delete_sandbox(sandbox.id)
        got = sha256_of(downloaded)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = size / 1e6
    rates = {"upload": mb / up_s, "download": mb / down_s, "local copy": mb / copy_s}
    growth = {"upload": up_rss["peak"] - up_rss["before"], "download": down_rss["peak"] - down_rss["before"]}
    print(f"\n{mib(size)} ({mb:.0f} MB) round trip")
    for name, seconds, sampled in (("upload", up_s, up_rss), ("download", down_s, down_rss)):
        print(
            f"  {name:10s} {seconds:7.2f} s {rates[name]:8.1f} MB/s  server RSS +{mib(growth[name])};"
            f" CPU s: runtime {sampled['server_cpu']:.2f}, client {sampled['client_cpu']:.2f}"
        )
    print(f"  local copy {copy_s:7.2f} s {rates['local copy']:8.1f} MB/s  (baseline: shutil.copyfile)")
    peak = max(up_rss["peak"], down_rss["peak"])
    print(f"  server RSS before upload {mib(up_rss['before'])}, peak {mib(peak)}")
    print(f"  sha256 local {expected[:16]}..., in sandbox {remote_sum[:16]}..., downloaded {got[:16]}...")
    report.figures["files"] = {
        "mib": size // 2**20,
        **{f"{k.replace(' ', '_')}_mbps": round(v, 1) for k, v in rates.items()},
        "upload_rss_growth_mib": round(growth["upload"] / 2**20, 1),
        "download_rss_growth_mib": round(growth["download"] / 2**20, 1),
        "server_rss_before_mib": round(up_rss["before"] / 2**20, 1),
        "sha256_ok": expected == remote_sum == got,
        **{
            f"{name}_{side}_cpu_s": round(sampled[f"{side}_cpu"], 2)
            for name, sampled in (("upload", up_rss), ("download", down_rss))
            for side in ("server", "client")
        },
    }
    report.goals += [
        Goal("upload throughput", rates["upload"], GOAL_MBPS, ">=", " MB/s"),
        Goal("download throughput", rates["download"], GOAL_MBPS, ">=", " MB/s"),
        Goal("server RSS growth, upload", growth["upload"] / 1e6, GOAL_RSS_GROWTH / 1e6, "<=", " MB"),
        Goal("server RSS growth, download", growth["download"] / 1e6, GOAL_RSS_GROWTH / 1e6, "<=", " MB"),
        Goal("SHA-256 matches both ways", float(expected == remote_sum == got), 1, ">="),
    ]
    report.emit()


if __name__ == "__main__":
    main()
