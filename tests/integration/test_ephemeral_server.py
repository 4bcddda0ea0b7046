"""Sandboxes of an ephemeral server (`LocalServer`) end with its process; `osbox serve`'s do not.

The servers run as real child processes that the tests SIGKILL: no shutdown code runs, so only
the process lifeline (`_backend/bwrap/lifeline.py`) can end the sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from osbox.server._backend.bwrap.cgroups import CgroupLayout, SandboxCgroup
from osbox.server._backend.bwrap.idranges import IdRangeRegistry
from osbox.server._backend.bwrap.procs import pidfd_exited, pidfd_if_same
from tests.integration.server_fixtures import requires_runtime
from tests.integration.test_resources import loop_devices_backed_by, mounts_under
from tests.polling import wait_until

pytestmark = [requires_runtime, pytest.mark.timeout(120)]

#: A LocalServer (one pre-started sandbox in its warm pool) that creates one sandbox, prints its
#: data dir and the sandbox's id, then waits to be killed.
_LOCAL_SERVER = """
import json, sys, httpx2
from osbox.server import LocalServer
server = LocalServer(warm_pool_size=1)
server.start()
created = httpx2.post(server.base_url + "/v1/sandboxes", timeout=60, json={
    "image": {"uri": "python:3.11"}, "entrypoint": ["sleep", "1000"], "timeout": 600})
print(json.dumps({"data_dir": str(server.data_dir), "id": created.json()["id"]}), flush=True)
sys.stdin.read()
"""


def _records(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every sandbox's adoption record under `data_dir` (its own and the warm pool's), by id."""
    found = {}
    for parent, prefix in ((data_dir / "sandboxes", ""), (data_dir / "pool", "pool-")):
        for record in parent.glob("*/run/agent.json"):
            with contextlib.suppress(OSError, ValueError):
                found[prefix + record.parent.parent.name] = json.loads(record.read_text())
    return found


def _pidfds(records: dict[str, dict[str, Any]]) -> list[int]:
    """pidfds of the recorded agents and bwraps still running (pinned: no pid-reuse confusion)."""
    fds = []
    for record in records.values():
        for name in ("agent", "bwrap"):
            fd = pidfd_if_same(int(record[f"{name}_pid"]), record.get(f"{name}_start"))
            if fd >= 0:
                fds.append(fd)
    return fds


async def _remove_cgroups(data_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    """Remove the cgroups a killed server could not remove itself (killing any survivor): those its
    records name, and those of pre-started sandboxes it was still starting (no record yet)."""
    cgroups = [SandboxCgroup.from_json(record.get("cgroup")) for record in records.values()]
    layout = CgroupLayout.detect()
    cgroups += [layout.existing(f"osbox-pool-{entry.name}") for entry in (data_dir / "pool").glob("*")]
    for cgroup in cgroups:
        if cgroup is not None:
            await cgroup.kill_and_remove()


def test_sandboxes_of_a_killed_local_server_end_with_it() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", _LOCAL_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    data_dir: Path | None = None
    pidfds: list[int] = []
    records: dict[str, dict[str, Any]] = {}
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        data_dir = Path(started["data_dir"])
        records = _records(data_dir)
        assert started["id"] in records
        pidfds = _pidfds(records)
        assert len(pidfds) >= 2 and not any(pidfd_exited(fd) for fd in pidfds)

        server.kill()  # SIGKILL: no shutdown code runs
        server.wait()
        wait_until(lambda: all(pidfd_exited(fd) for fd in pidfds), what="the sandboxes to end")

        # What they left (their cgroups, the data dir) goes when the next LocalServer starts.
        cgroups = [SandboxCgroup.from_json(record.get("cgroup")) for record in records.values()]
        cgroup_dirs = [path for cgroup in cgroups if cgroup is not None for path in cgroup.paths.values()]
        assert data_dir.is_dir() and (cgroup_dirs or CgroupLayout.detect().version is None)
        with LocalServer(warm_pool_size=0) as next_server:
            assert next_server.data_dir != data_dir
        assert not data_dir.exists()
        assert not [path for path in cgroup_dirs if path.exists()]
        assert not mounts_under(data_dir)  # the sandboxes' disks, unmounted; their loop devices go
        wait_until(lambda: not loop_devices_backed_by(data_dir), what="the loop devices to go")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for fd in pidfds:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        if data_dir is not None:
            asyncio.run(_remove_cgroups(data_dir, records))
            shutil.rmtree(data_dir, ignore_errors=True)
        if os.geteuid() == 0:
            IdRangeRegistry().sweep()  # the killed server's reservations


def test_a_running_local_servers_data_dir_is_left_alone() -> None:
    with LocalServer(warm_pool_size=0) as first:
        data_dir = first.data_dir
        created = httpx2.post(
            first.base_url + "/v1/sandboxes",
            timeout=60,
            json={"image": {"uri": "python:3.11"}, "entrypoint": ["sleep", "1000"], "timeout": 600},
        )
        assert created.status_code == 202, created.text
        sandbox_url = f"{first.base_url}/v1/sandboxes/{created.json()['id']}"
        with LocalServer(warm_pool_size=0) as second:  # its start sweeps abandoned dirs only
            assert second.data_dir != data_dir
        assert httpx2.get(sandbox_url).json()["status"]["state"] == "Running"
    assert not data_dir.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _osbox_serve(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`osbox serve` on `data_dir` (no warm pool) until the block ends; killed if still running."""
    port = _free_port()
    argv = [sys.executable, "-m", "osbox.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        argv, env={**os.environ, "OSBOX_WARM_POOL": "0"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/v1"

    def healthy() -> bool:
        assert process.poll() is None, "osbox serve exited"
        try:
            return httpx2.get(f"{url}/sandboxes").status_code == 200
        except httpx2.TransportError:
            return False

    try:
        wait_until(healthy, timeout=60, what="osbox serve to answer")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_sandboxes_of_osbox_serve_survive_its_death(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    pidfds: list[int] = []
    sandbox_id = ""
    try:
        with _osbox_serve(data_dir) as (first, url):
            body = {"image": {"uri": "python:3.11"}, "entrypoint": ["sleep", "1000"], "timeout": 600}
            sandbox_id = httpx2.post(f"{url}/sandboxes", json=body, timeout=60).json()["id"]
            pidfds = _pidfds(_records(data_dir))
            assert len(pidfds) == 2  # its agent and bwrap: else the checks below would hold vacuously
            first.kill()  # SIGKILL, like a crash
            first.wait()
        with _osbox_serve(data_dir) as (_second, url):
            assert not any(pidfd_exited(fd) for fd in pidfds)  # nothing ended it meanwhile
            status = httpx2.get(f"{url}/sandboxes/{sandbox_id}").json()["status"]
            assert status["state"] == "Running" and status["reason"] == "server_restart"
            assert httpx2.delete(f"{url}/sandboxes/{sandbox_id}", timeout=60).status_code == 204
            wait_until(lambda: all(pidfd_exited(fd) for fd in pidfds), what="the deleted sandbox to end")
    finally:
        for fd in pidfds:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
