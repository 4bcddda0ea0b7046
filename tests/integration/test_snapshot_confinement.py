"""Snapshots copy a hostile sandbox's files safely (issue 11, finding 3 and "what to build" 1).

A sparse file stays sparse (it used to be expanded: `truncate -s 10T` could fill the host's disk),
a symlink is captured as a symlink and restored as one (never followed by the root server), and
all snapshots together stay within the server's `snapshots_max_bytes`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx2

from osbox.server import LocalServer
from tests.integration.server_fixtures import API_KEY, lifecycle_client, requires_runtime
from tests.polling import wait_until

pytestmark = requires_runtime

GIB = 2**30
#: Comfortably more than a few metadata blocks, far less than any expanded sparse file.
ALMOST_NOTHING = 1 << 20


def _wait_for_output(api: httpx2.Client, sandbox_id: str, marker: str) -> str:
    def content() -> str | None:
        response = api.get(f"/sandboxes/{sandbox_id}/diagnostics/logs", params={"scope": "container"})
        text: str = response.json()["content"]
        return text if marker in text else None

    return wait_until(content, what=f"{marker!r} in the sandbox's output")


def _snapshot(api: httpx2.Client, sandbox_id: str) -> dict[str, Any]:
    """Take a snapshot and wait until it is Ready or Failed."""
    accepted = api.post(f"/sandboxes/{sandbox_id}/snapshots", json={})
    assert accepted.status_code == 202, accepted.text
    snapshot_id = accepted.json()["id"]

    def settled() -> dict[str, Any] | None:
        snapshot: dict[str, Any] = api.get(f"/snapshots/{snapshot_id}").json()
        return snapshot if snapshot["status"]["state"] in ("Ready", "Failed") else None

    return wait_until(settled, timeout=120, what="the snapshot to settle")


def _listing(directory: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.lstat().st_mode, p.lstat().st_mtime_ns) for p in directory.iterdir())


def test_sparse_files_and_symlinks_survive_capture_and_restore(
    api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer
) -> None:
    etc_before = _listing(Path("/etc"))
    script = (
        "truncate -s 3G /workspace/sparse && ln -s /etc /workspace/x && ln -s /etc/hostname /workspace/h "
        "&& mkdir /workspace/d && ln -s ../x /workspace/d/up && echo ready; exec tail -f /dev/null"
    )
    source = make_sandbox(["sh", "-c", script])["id"]
    _wait_for_output(api, source, "ready")
    snapshot = _snapshot(api, source)
    assert snapshot["status"]["state"] == "Ready", snapshot
    captured = lifecycle_server.data_dir / "snapshots" / snapshot["id"] / "fs" / "upper" / "workspace"
    assert (captured / "sparse").stat().st_size == 3 * GIB
    assert (captured / "sparse").stat().st_blocks * 512 < ALMOST_NOTHING
    for name, target in [("x", "/etc"), ("h", "/etc/hostname"), ("d/up", "../x")]:
        assert (captured / name).is_symlink() and os.readlink(captured / name) == target

    restored = make_sandbox(
        [
            "sh",
            "-c",
            "readlink /workspace/x; stat -c 'blocks=%b' /workspace/sparse; echo done; exec sleep 600",
        ],
        snapshotId=snapshot["id"],
        image=None,
    )["id"]
    output = _wait_for_output(api, restored, "done")
    blocks = re.search(r"blocks=(\d+)", output)
    assert "/etc\n" in output and blocks is not None and int(blocks[1]) * 512 < ALMOST_NOTHING, output
    workspace = lifecycle_server.data_dir / "sandboxes" / restored / "fs" / "upper" / "workspace"
    assert (workspace / "x").is_symlink() and os.readlink(workspace / "x") == "/etc"
    assert (workspace / "sparse").stat().st_blocks * 512 < ALMOST_NOTHING
    assert _listing(Path("/etc")) == etc_before  # nothing was written through a symlink


def test_snapshots_count_against_the_servers_cap(reachable_dir: Path) -> None:
    cap = 4 << 20
    body = {"image": {"uri": "python:3.11"}, "entrypoint": ["sh", "-c", "sleep 600"]}
    with (
        LocalServer(api_key=API_KEY, data_dir=reachable_dir / "data", snapshots_max_bytes=cap) as server,
        lifecycle_client(server) as api,
    ):
        sparse = api.post(
            "/sandboxes",
            json={
                **body,
                "entrypoint": ["sh", "-c", "truncate -s 10T /workspace/s; echo ready; exec sleep 600"],
            },
        ).json()
        _wait_for_output(api, sparse["id"], "ready")
        assert _snapshot(api, sparse["id"])["status"]["state"] == "Ready"  # holes take no room

        script = "head -c 3000000 /dev/urandom > /workspace/dense && echo ready; exec sleep 600"
        dense = api.post("/sandboxes", json={**body, "entrypoint": ["sh", "-c", script]}).json()
        _wait_for_output(api, dense["id"], "ready")
        first = _snapshot(api, dense["id"])
        assert first["status"]["state"] == "Ready", first  # 3 MB of 4 MiB
        second = _snapshot(api, dense["id"])  # another 3 MB does not fit
        assert second["status"]["state"] == "Failed", second
        assert second["status"]["reason"] == "snapshot_storage_full"
        assert "delete snapshots" in second["status"]["message"]
        assert not (server.data_dir / "snapshots" / second["id"]).exists()
        assert api.delete(f"/snapshots/{first['id']}").status_code == 204
        assert _snapshot(api, dense["id"])["status"]["state"] == "Ready"  # room again
