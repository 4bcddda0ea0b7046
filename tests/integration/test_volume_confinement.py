"""A sandbox cannot turn a named volume's `subPath` into a path on the host (issue 11, finding 1).

Sandbox A, with a `pvc` volume, plants `evil -> <host dir>` in it; a create with the same claim
and `subPath: "evil"` used to make the server (root) mkdir and chmod 0777 the symlink's target and
bind-mount it read-write into the new sandbox. Now every volume path below its trusted root is
resolved without following symlinks: the create is refused and the host dir is untouched.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import httpx2

from osbox.server import LocalServer
from tests.integration.server_fixtures import requires_runtime
from tests.polling import wait_until

pytestmark = requires_runtime


def _state(directory: Path) -> list[tuple[str, int, int, int, bytes]]:
    """Every entry's (path, mode, uid, gid, content) under `directory`, itself included."""
    entries = [directory, *sorted(directory.rglob("*"))]
    return [
        (
            str(p),
            p.lstat().st_mode,
            p.lstat().st_uid,
            p.lstat().st_gid,
            p.read_bytes() if p.is_file() and not p.is_symlink() else b"",
        )
        for p in entries
    ]


def test_pvc_subpath_symlink_to_a_host_dir_is_refused(
    api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer, reachable_dir: Path
) -> None:
    host_dir = reachable_dir / "root-owned"
    host_dir.mkdir(mode=0o755)
    host_dir.chmod(0o755)
    (host_dir / "keep.txt").write_text("host data\n")
    before = _state(host_dir)
    claim = f"claim-{secrets.token_hex(4)}"
    volume = {"name": "shared", "mountPath": "/mnt/shared", "pvc": {"claimName": claim}}
    make_sandbox(["sh", "-c", f"ln -s {host_dir} /mnt/shared/evil; exec tail -f /dev/null"], volumes=[volume])
    planted = lifecycle_server.data_dir / "volumes" / claim / "evil"
    wait_until(planted.is_symlink, what="sandbox A to plant its symlink")

    body = {
        "image": {"uri": "python:3.11"},
        "entrypoint": ["tail", "-f", "/dev/null"],
        "volumes": [{**volume, "subPath": "evil"}],
    }
    response = api.post("/sandboxes", json=body)
    assert response.status_code == 400, response.text
    assert "symlink" in response.json()["message"]
    deeper = api.post("/sandboxes", json={**body, "volumes": [{**volume, "subPath": "evil/inner"}]})
    assert deeper.status_code == 400, deeper.text
    assert _state(host_dir) == before
    assert not (host_dir / "inner").exists()


def test_host_volume_subpath_is_resolved_without_symlinks(
    api: httpx2.Client, make_sandbox: Any, reachable_dir: Path
) -> None:
    target = reachable_dir / "target"
    target.mkdir()
    shared = reachable_dir / "shared"
    (shared / "real").mkdir(parents=True)
    (shared / "real" / "file.txt").write_text("through the real dir\n")
    (shared / "link").symlink_to(target)
    volume = {"name": "data", "mountPath": "/data", "host": {"path": str(shared)}}
    body = {"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"]}
    refused = api.post("/sandboxes", json={**body, "volumes": [{**volume, "subPath": "link"}]})
    assert refused.status_code == 400 and "symlink" in refused.json()["message"], refused.text
    missing = api.post("/sandboxes", json={**body, "volumes": [{**volume, "subPath": "absent"}]})
    assert missing.status_code == 400 and "does not exist" in missing.json()["message"], missing.text
    # A real subPath still works, and so does a host path that is itself a symlink (the operator's).
    (reachable_dir / "alias").symlink_to(shared)
    sandbox = make_sandbox(
        ["sh", "-c", "cat /data/file.txt; echo done; exec tail -f /dev/null"],
        volumes=[{**volume, "host": {"path": str(reachable_dir / "alias")}, "subPath": "real"}],
    )

    def output() -> str | None:
        logs = api.get(f"/sandboxes/{sandbox['id']}/diagnostics/logs", params={"scope": "all"})
        text: str = logs.json()["content"]
        return text if "done" in text else None

    assert "through the real dir" in wait_until(output, what="the volume to be readable")
    assert os.listdir(target) == []
