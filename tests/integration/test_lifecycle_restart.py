"""Restart recovery: a new server on the same data dir re-adopts live sandboxes, fails dead ones."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx2
import psutil  # type: ignore[import-untyped]

from osbox.server import LocalServer
from tests.integration.server_fixtures import (
    assert_no_sandbox_processes,
    lifecycle_client,
    requires_runtime,
)
from tests.integration.test_lifecycle_proxy import ECHO_SERVER
from tests.polling import wait_until

pytestmark = requires_runtime


def sandbox_processes(data_dir: Path, sandbox_id: str, uid: int | None = None) -> list[psutil.Process]:
    """Live (non-zombie) processes of a sandbox: those running as its own host uid.

    The uid comes from the backend's re-adoption record (`run/agent.json` in the state dir), read
    while the sandbox exists; pass it explicitly once the state dir is gone.
    """
    if uid is None:
        uid = _uid(data_dir, sandbox_id)
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and process.info["uids"].real == uid:
            found.append(process)
    return found


def kill_tree(processes: list[psutil.Process]) -> None:
    """SIGKILL processes and their descendants; reap the ones that are our children."""
    everything = {p.pid: p for p in processes}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            everything.update((child.pid, child) for child in process.children(recursive=True))
    for process in everything.values():
        with contextlib.suppress(psutil.NoSuchProcess):  # killing a parent may take its children
            process.kill()
    psutil.wait_procs(list(everything.values()), timeout=10)


def test_restart_readopts_live_sandboxes_and_fails_dead_ones(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    with (
        LocalServer(data_dir=data_dir, api_key="k", destroy_on_shutdown=False) as first,
        lifecycle_client(first, api_key="k") as api,
    ):
        body = {
            "image": {"uri": "python:3.11"},
            "entrypoint": ["python3", "-c", ECHO_SERVER],
            "env": {"TAG": "live"},
        }
        live = api.post("/sandboxes", json={**body, "metadata": {"role": "live"}}).json()["id"]
        paused = api.post("/sandboxes", json={**body, "timeout": 3600}).json()["id"]
        dead = api.post("/sandboxes", json={**body, "entrypoint": ["sleep", "1000"]}).json()["id"]
        assert api.post(f"/sandboxes/{paused}/pause").status_code == 202
    # The first server is gone; its sandboxes are not. Kill one tree behind its back.
    uids = {sid: _uid(data_dir, sid) for sid in (live, paused, dead)}
    try:
        assert sandbox_processes(data_dir, live) and sandbox_processes(data_dir, dead)
        kill_tree(sandbox_processes(data_dir, dead))

        with (
            LocalServer(data_dir=data_dir, api_key="k") as second,
            lifecycle_client(second, api_key="k") as api,
        ):
            assert api.get(f"/sandboxes/{live}").json()["status"]["state"] == "Running"
            assert api.get(f"/sandboxes/{paused}").json()["status"]["state"] == "Paused"
            failed = api.get(f"/sandboxes/{dead}").json()["status"]
            assert failed["state"] == "Failed" and failed["reason"] == "server_restart"
            assert sandbox_processes(data_dir, dead, uids[dead]) == []
            assert api.get("/sandboxes", params={"metadata": "role=live"}).json()["items"][0]["id"] == live

            proxied = f"{second.base_url}/sandboxes/{live}/proxy/8000/after-restart"
            assert wait_until(
                lambda: httpx2.get(proxied).status_code == 200, what="the re-adopted echo server"
            )
            assert httpx2.get(proxied).json()["tag"] == "live"
            token = api.get(f"/sandboxes/{live}/endpoints/44772").json()["headers"]["X-EXECD-ACCESS-TOKEN"]
            headers = {"X-EXECD-ACCESS-TOKEN": token}
            ping = httpx2.get(f"{second.base_url}/sandboxes/{live}/proxy/44772/ping", headers=headers)
            assert ping.status_code == 200
            assert api.post(f"/sandboxes/{paused}/resume").status_code == 202

        # LocalServer destroys what it owns on exit: nothing is left running.
        for sandbox_id, uid in uids.items():
            assert sandbox_processes(data_dir, sandbox_id, uid) == []
        assert not (data_dir / "sandboxes" / live).exists()
        assert_no_sandbox_processes()
    finally:  # whatever failed above, no sandbox outlives the test
        for uid in uids.values():
            kill_tree(sandbox_processes(data_dir, "", uid))


def _uid(data_dir: Path, sandbox_id: str) -> int:
    record = json.loads((data_dir / "sandboxes" / sandbox_id / "run" / "agent.json").read_text())
    return int(record["uid"])
