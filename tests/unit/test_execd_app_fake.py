"""The execd app over the fake backend (`tests/fake_backend.py`): commands, files, sessions,
metrics and errors, with no namespaces. The routes see only `_backend/base.py`, so they behave
here as over bubblewrap; what is bubblewrap's own (uids, confinement by the kernel) is tested in
tests/integration."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server._backend.base import SandboxSpec
from osbox.server.execd import ExecdService
from tests.fake_backend import FakeBackend, FakeSandbox


@dataclass
class Served:
    """A fake sandbox, its execd service and a client for it."""

    handle: FakeSandbox
    client: httpx2.AsyncClient

    async def run(self, command: str, path: str = "/command", **options: Any) -> list[dict[str, Any]]:
        response = await self.client.post(path, json={"command": command, **options})
        assert response.status_code == 200, response.text
        events = [json.loads(block) for block in response.text.split("\n\n") if block.strip()]
        return [event for event in events if event.get("type") != "ping"]


def stdout(events: list[dict[str, Any]]) -> list[str]:
    return [event["text"] for event in events if event["type"] == "stdout"]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    backend = FakeBackend()
    service = ExecdService(log_dir=tmp_path / "logs")
    spec = SandboxSpec(
        "f" + secrets.token_hex(4), ["sleep", "3600"], tmp_path / "sandbox", env={"GREETING": "hi"}
    )
    handle = await backend.create(spec)
    try:
        transport = httpx2.ASGITransport(app=service.app_for(handle))
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://execd.test", timeout=60
        ) as client:
            yield Served(handle, client)
    finally:
        await service.aclose()
        await backend.close()


async def test_ping(served: Served) -> None:
    assert (await served.client.get("/ping")).status_code == 200


async def test_a_command_streams_its_output_and_its_exit_status(served: Served) -> None:
    events = await served.run('echo "$GREETING"; echo oops >&2; exit 3')
    assert events[0]["type"] == "init"
    assert stdout(events) == ["hi"]
    assert [e["text"] for e in events if e["type"] == "stderr"] == ["oops"]
    assert events[-1]["error"] == {"ename": "CommandExecError", "evalue": "3", "traceback": ["exit status 3"]}
    status = (await served.client.get(f"/command/status/{events[0]['text']}")).json()
    assert status["exit_code"] == 3 and status["running"] is False


async def test_a_command_runs_in_its_cwd_inside_the_sandbox(served: Served) -> None:
    (served.handle.root / "workspace" / "proj").mkdir()
    (served.handle.root / "workspace" / "proj" / "marker").write_text("here")
    assert stdout(await served.run("cat marker", cwd="/workspace/proj")) == ["here"]
    missing = await served.client.post("/command", json={"command": "true", "cwd": "/workspace/nope"})
    assert missing.status_code == 400 and "/workspace/nope" in missing.json()["message"]


async def test_files_round_trip_through_the_typed_file_operations(served: Served) -> None:
    made = await served.client.post("/directories", json={"/workspace/out": {"mode": 700}})
    assert made.status_code == 200
    files: list[tuple[str, tuple[str, str | bytes, str]]] = [
        (
            "metadata",
            ("metadata", json.dumps({"path": "/workspace/out/a.txt", "mode": 600}), "application/json"),
        ),
        ("file", ("a.txt", b"alpha beta alpha", "application/octet-stream")),
    ]
    assert (await served.client.post("/files/upload", files=files)).status_code == 200
    assert (served.handle.root / "workspace" / "out" / "a.txt").read_bytes() == b"alpha beta alpha"

    info = (await served.client.get("/files/info", params={"path": "out/a.txt"})).json()
    assert info["out/a.txt"]["path"] == "/workspace/out/a.txt"
    assert info["out/a.txt"]["size"] == 16 and info["out/a.txt"]["mode"] == 600

    replaced = await served.client.post(
        "/files/replace",
        params={"verbose": "true"},
        json={"/workspace/out/a.txt": {"old": "alpha", "new": "A"}},
    )
    assert replaced.json() == {"/workspace/out/a.txt": {"replacedCount": 2}}
    download = await served.client.get("/files/download", params={"path": "/workspace/out/a.txt"})
    assert download.status_code == 200 and download.content == b"A beta A"

    moved = await served.client.post(
        "/files/mv", json=[{"src": "/workspace/out/a.txt", "dest": "/workspace/b.txt"}]
    )
    assert moved.status_code == 200
    found = (
        await served.client.get("/files/search", params={"path": "/workspace", "pattern": "*.txt"})
    ).json()
    assert [entry["path"] for entry in found] == ["/workspace/b.txt"]
    listing = (await served.client.get("/directories/list", params={"path": "/workspace"})).json()
    assert sorted(entry["path"] for entry in listing) == ["/workspace/b.txt", "/workspace/out"]

    assert (await served.client.delete("/files", params={"path": "/workspace/b.txt"})).status_code == 200
    assert (await served.client.delete("/directories", params={"path": "/workspace/out"})).status_code == 200
    assert (await served.client.get("/directories/list", params={"path": "/workspace"})).json() == []


async def test_file_errors_map_to_statuses(served: Served) -> None:
    missing = await served.client.get("/files/info", params={"path": "/workspace/missing"})
    assert missing.status_code == 404 and missing.json()["code"] == "FILE_NOT_FOUND"
    assert "/workspace/missing" in missing.json()["message"], "the sandbox's path, not the host's"
    (served.handle.root / "workspace" / "d").mkdir()
    not_a_file = await served.client.delete("/files", params={"path": "/workspace/d"})
    assert not_a_file.status_code == 400 and not_a_file.json()["code"] == "INVALID_FILE"
    bad_body = await served.client.post("/files/mv", json={"src": "a"})
    assert bad_body.status_code == 400 and bad_body.json()["code"] == "INVALID_REQUEST_BODY"
    no_query = await served.client.get("/files/info")
    assert no_query.status_code == 400 and no_query.json()["code"] == "MISSING_QUERY"


async def test_a_symlink_out_of_the_fake_sandbox_is_refused(served: Served, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("host secret")
    (served.handle.root / "workspace" / "escape").symlink_to(tmp_path / "outside.txt")
    download = await served.client.get("/files/download", params={"path": "/workspace/escape"})
    assert download.status_code == 400 and b"host secret" not in download.content


async def test_a_session_keeps_exported_variables_and_its_state_is_dropped(served: Served) -> None:
    created = await served.client.post("/session", json={"cwd": "/workspace/proj"})
    session_id = created.json()["session_id"]
    assert (served.handle.root / "workspace" / "proj").is_dir(), "the session's cwd was made"
    events = await served.run("export A=1; B=2; echo err >&2", path=f"/session/{session_id}/run")
    assert stdout(events) == ["err"], "stderr is merged into stdout"
    events = await served.run('echo "A=$A B=$B"; basename "$PWD"', path=f"/session/{session_id}/run")
    assert stdout(events) == ["A=1 B=", "proj"]
    sessions_dir = served.handle.root / "tmp" / ".osbox" / "sessions"
    assert any(sessions_dir.iterdir())
    assert (await served.client.delete(f"/session/{session_id}")).status_code == 200
    assert not any(sessions_dir.iterdir()), "the state files are gone"
    gone = await served.client.delete(f"/session/{session_id}")
    assert gone.status_code == 404 and gone.json()["code"] == "CONTEXT_NOT_FOUND"


async def test_metrics_come_from_the_backends_usage(served: Served) -> None:
    body = (await served.client.get("/metrics")).json()
    assert body["cpu_count"] > 0 and 0 <= body["cpu_used_pct"] <= 100
    assert 0 < body["mem_used_mib"] <= body["mem_total_mib"]


async def test_a_request_without_a_sandbox_is_a_wiring_error_not_a_crash(tmp_path: Path) -> None:
    service = ExecdService(log_dir=tmp_path / "logs")
    try:
        transport = httpx2.ASGITransport(app=service.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://execd.test") as client:
            response = await client.get("/files/info", params={"path": "/workspace"})
        assert response.status_code == 500 and response.json()["code"] == "RUNTIME_ERROR"
    finally:
        await service.aclose()


async def test_a_backend_that_cannot_watch_files_answers_501_and_bad_arguments_400(served: Served) -> None:
    """`GET /files/watch` is an osbox extension; a backend without `files.watch` says so."""
    unsupported = await served.client.get("/files/watch", params={"path": "/workspace"})
    assert unsupported.status_code == 501 and unsupported.json()["code"] == "NOT_SUPPORTED"
    assert "cannot watch" in unsupported.json()["message"]
    bad = await served.client.get("/files/watch", params={"path": "/workspace", "recursive": "maybe"})
    assert bad.status_code == 400
    missing = await served.client.get("/files/watch")
    assert missing.status_code == 400 and missing.json()["code"] == "MISSING_QUERY"
