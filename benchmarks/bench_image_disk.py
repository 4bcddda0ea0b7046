"""Disk use of many sandboxes of one image: the image's layers are stored once, each sandbox adds
only its own writable layer.

An `osbox serve` subprocess (as root, the image already in its store); N sandboxes of `python:3.11`
(the tests' Debian image, ~370 MB unpacked) each write 1 MiB to /workspace. Measured on the file
system holding the data dir and the image store (`statvfs`, before and after, all N running):
  added      bytes the N sandboxes took, in all
  writable   what the sandboxes own, as the host pays for it: each one's disk image (its writable
             layer: allocated blocks, file system metadata included) and state dir (logs, sockets),
             the warm pool's pre-started sandboxes included
Baselines in the same run: the image's unpacked size (what one private copy per sandbox would add,
times N), and `writable` itself. Goal: added <= 1.05 x writable (the image's layers never copied; the
server's own records and logs are the rest).

    python benchmarks/bench_image_disk.py [--quick]
"""

from __future__ import annotations

import os
from pathlib import Path

from _common import IMAGE_CACHE, SANDBOX_ARGS, Goal, Report, mib, osbox_server, parse_args

from osbox import ExecdClient, LifecycleClient

DATA_BYTES = 1 << 20
WRITE = f"head -c {DATA_BYTES} /dev/urandom > /workspace/data && sync"
LIMITS = {"cpu": "100m", "memory": "64Mi"}


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def allocated(path: Path) -> int:
    """Bytes of disk a tree takes on its own file system (allocated blocks, holes not counted): a
    sandbox's disk is counted as its image file, not again through where it is mounted."""
    device, total = path.stat().st_dev, 0
    for directory, subdirs, files in os.walk(path):
        subdirs[:] = [d for d in subdirs if os.lstat(os.path.join(directory, d)).st_dev == device]
        total += sum(os.lstat(os.path.join(directory, name)).st_blocks * 512 for name in files)
    return total


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 10 if args.quick else 100
    report = Report.start("image_disk", args.quick)
    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=120) as lifecycle:
        image_bytes = allocated(IMAGE_CACHE / "store" / "layers")  # unpacked once, shared
        before = free_bytes(server.data_dir)
        ids = []
        for _ in range(count):
            sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS, resource_limits=LIMITS)
            if sandbox.status.state != "Running":
                raise RuntimeError(f"sandbox {sandbox.id}: {sandbox.status.state}, {sandbox.status.message}")
            ids.append(sandbox.id)
            with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772)) as execd:
                result = execd.run_command(WRITE).run()
                if result.exit_code != 0:
                    raise RuntimeError(f"writing in {sandbox.id} failed: {result}")
        added = before - free_bytes(server.data_dir)
        # Everything the sandboxes own on the host: their disks (writable layers) and state dirs, and
        # those of the warm pool's pre-started sandboxes.
        writable = allocated(server.data_dir / "sandboxes") + allocated(server.data_dir / "pool")
    print(f"\n{count} sandboxes of python:3.11, each with {mib(DATA_BYTES)} written")
    print(f"  disk added, in all:            {mib(added)} ({mib(added / count)} per sandbox)")
    print(f"  their own files, summed:       {mib(writable)}")
    print(f"  the image store's layers:      {mib(image_bytes)} (unchanged)")
    print(f"  a private copy per sandbox:    {mib(image_bytes * count)}")
    report.figures["disk"] = {
        "sandboxes": count,
        "added_mib": round(added / 2**20, 1),
        "writable_mib": round(writable / 2**20, 1),
        "image_mib": round(image_bytes / 2**20, 1),
        "copy_each_mib": round(image_bytes * count / 2**20, 1),
    }
    report.goals.append(Goal("disk added / the sandboxes' own files", added / writable, 1.05, "<=", "x"))
    report.emit()


if __name__ == "__main__":
    main()
