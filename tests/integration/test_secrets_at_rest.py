"""Secrets at rest: no token in the database, the data dir closed to other users, host volumes kept
away from it (issue 11, finding 2)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from tests.integration.server_fixtures import lifecycle_client, requires_runtime
from tests.integration.test_lifecycle_restart import kill_tree, sandbox_processes

pytestmark = requires_runtime

SANDBOX: dict[str, Any] = {"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"]}
NOBODY = 65534

#: Tries to read each path given; prints one errno name (or "read") per path.
READ_EACH = """
import errno, sys
for path in sys.argv[1:]:
    try:
        open(path, "rb").read(1)
        print("read")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
"""


def read_as_nobody(*paths: Path) -> list[str]:
    """What uid/gid 65534 gets trying to read each path: "read" or an errno name."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    result = subprocess.run(
        [python, "-c", READ_EACH, *map(str, paths)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def stored_bytes(data_dir: Path) -> bytes:
    """Everything the database holds, every way it can be read: the raw files (main, WAL) and a dump
    of every table, row and column."""
    raw = b"".join(path.read_bytes() for path in sorted(data_dir.glob("osbox.db*")))
    with sqlite3.connect(f"file:{data_dir / 'osbox.db'}?mode=ro", uri=True) as db:
        dump = "\n".join(db.iterdump())
    return raw + dump.encode()


def endpoint_tokens(api: httpx2.Client, sandbox_id: str) -> tuple[str, str]:
    """(execd token, egress token) as the endpoint routes return them."""
    execd = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()["headers"]["X-EXECD-ACCESS-TOKEN"]
    egress = api.get(f"/sandboxes/{sandbox_id}/endpoints/18080").json()["headers"]["OPENSANDBOX-EGRESS-AUTH"]
    return execd, egress


def run_through_proxy(server: LocalServer, sandbox_id: str, token: str, command: str) -> httpx2.Response:
    """POST /command to the sandbox's execd through the server proxy, with `token`."""
    return httpx2.post(
        f"{server.base_url}/sandboxes/{sandbox_id}/proxy/44772/command",
        json={"command": command},
        headers={"X-EXECD-ACCESS-TOKEN": token},
        timeout=60,
    )


def kill_leftover(data_dir: Path, sandbox_id: str) -> None:
    """Kill what is left of a sandbox that a server kept running (when a test fails half way)."""
    if (data_dir / "sandboxes" / sandbox_id / "run" / "agent.json").exists():
        kill_tree(sandbox_processes(data_dir, sandbox_id))


def assert_runs(server: LocalServer, sandbox_id: str, token: str) -> None:
    answer = run_through_proxy(server, sandbox_id, token, "echo through-$((40 + 2))")
    assert answer.status_code == 200 and "through-42" in answer.text, answer.text


def test_the_database_holds_no_token_and_tokens_survive_a_restart(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    with (
        LocalServer(data_dir=data_dir, api_key="k", destroy_on_shutdown=False) as first,
        lifecycle_client(first, api_key="k") as api,
    ):
        sandbox_id = api.post("/sandboxes", json=SANDBOX).json()["id"]
        execd, egress = endpoint_tokens(api, sandbox_id)
        assert endpoint_tokens(api, sandbox_id) == (execd, egress)  # the same, however often asked
        assert_runs(first, sandbox_id, execd)
        stored = stored_bytes(data_dir)
        assert execd.encode() not in stored and egress.encode() not in stored
    try:
        with (
            LocalServer(data_dir=data_dir, api_key="k") as second,
            lifecycle_client(second, api_key="k") as api,
        ):
            assert endpoint_tokens(api, sandbox_id) == (execd, egress)
            assert_runs(second, sandbox_id, execd)  # a client that kept its token goes on working
            assert run_through_proxy(second, sandbox_id, egress, "true").status_code == 401
    finally:
        kill_leftover(data_dir, sandbox_id)


def test_plaintext_tokens_of_an_older_version_are_replaced_and_scrubbed(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    with (
        LocalServer(data_dir=data_dir, destroy_on_shutdown=False) as first,
        lifecycle_client(first, api_key=None) as api,
    ):
        sandbox_id = api.post("/sandboxes", json=SANDBOX).json()["id"]
    try:
        # Make the record what an older version wrote: tokens in plaintext, no salt.
        old_token = "plaintext-token-of-an-older-version-0123456789"
        with sqlite3.connect(data_dir / "osbox.db") as db:
            doc = json.loads(
                db.execute("SELECT doc FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()[0]
            )
            doc.pop("token_salt", None)
            doc.update(execd_token=old_token, egress_token=old_token)
            db.execute("UPDATE sandboxes SET doc = ? WHERE id = ?", (json.dumps(doc), sandbox_id))
        assert old_token.encode() in stored_bytes(data_dir)

        with LocalServer(data_dir=data_dir) as second, lifecycle_client(second, api_key=None) as api:
            execd, _ = endpoint_tokens(api, sandbox_id)
            assert execd != old_token
            assert_runs(second, sandbox_id, execd)
            assert run_through_proxy(second, sandbox_id, old_token, "true").status_code == 401
            assert old_token.encode() not in stored_bytes(data_dir)
    finally:
        kill_leftover(data_dir, sandbox_id)


def test_the_database_and_the_key_are_closed_to_other_users(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    with LocalServer(data_dir=data_dir) as server, lifecycle_client(server, api_key=None) as api:
        assert api.post("/sandboxes", json=SANDBOX).status_code == 202
        database = [data_dir / "osbox.db", data_dir / "osbox.db-wal"]
        assert read_as_nobody(*database) == ["EACCES", "EACCES"]
        assert read_as_nobody(data_dir / "secret.key") == ["EACCES"]
        for path in [*database, data_dir / "osbox.db-shm", data_dir / "secret.key"]:
            assert path.stat().st_mode & 0o777 == 0o600, path
        # Directories: the server's alone, or searchable (not listable) where bwrap must pass.
        for path in (data_dir, data_dir / "sandboxes", data_dir / "volumes"):
            assert path.stat().st_mode & 0o777 == 0o711, path
        assert (data_dir / "snapshots").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("unsafe", ["data dir", "parent"])
def test_a_data_dir_others_can_write_is_refused(reachable_dir: Path, unsafe: str) -> None:
    parent = reachable_dir / "parent"
    data_dir = parent / "data"
    data_dir.mkdir(parents=True)
    (data_dir if unsafe == "data dir" else parent).chmod(0o777)
    server = LocalServer(data_dir=data_dir)
    try:
        with pytest.raises(RuntimeError, match="writable by other users"):
            server.start()
    finally:
        server.stop()
    assert not (data_dir / "osbox.db").exists() and not (data_dir / "secret.key").exists()


def test_a_host_volume_holding_the_data_dir_is_refused(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    with LocalServer(data_dir=data_dir) as server, lifecycle_client(server, api_key=None) as api:
        for host_path in ("/", str(reachable_dir), str(data_dir), str(data_dir / "sandboxes")):
            volume = {"name": "v", "mountPath": "/mnt/v", "readOnly": True, "host": {"path": host_path}}
            answer = api.post("/sandboxes", json={**SANDBOX, "volumes": [volume]})
            assert answer.status_code == 400, (host_path, answer.text)
            assert "data dir" in answer.json()["message"]
        assert api.get("/sandboxes").json()["items"] == []
