"""Snapshots: capture a sandbox's workspace and home, restore them into a new sandbox."""

from __future__ import annotations

from typing import Any

import httpx2

from osbox.models.lifecycle import ListSnapshotsResponse, Snapshot
from tests.integration.server_fixtures import requires_runtime
from tests.polling import wait_until

pytestmark = requires_runtime

WRITE = (
    "echo snapshot-data > /workspace/keep.txt && mkdir -p $HOME/notes && echo home-data > $HOME/notes/h.txt "
    "&& echo written; exec tail -f /dev/null"
)
READ = "cat /workspace/keep.txt $HOME/notes/h.txt; echo read-done; exec tail -f /dev/null"


def _logs_containing(api: httpx2.Client, sandbox_id: str, marker: str) -> str:
    def content() -> str | None:
        response = api.get(f"/sandboxes/{sandbox_id}/diagnostics/logs", params={"scope": "container"})
        text: str = response.json()["content"]
        return text if marker in text else None

    return wait_until(content, what=f"{marker!r} in the sandbox's output")


def test_snapshot_and_restore(api: httpx2.Client, make_sandbox: Any) -> None:
    source = make_sandbox(["sh", "-c", WRITE], env={"FROM_SOURCE": "1"})["id"]
    _logs_containing(api, source, "written")

    accepted = api.post(f"/sandboxes/{source}/snapshots", json={"name": "before-import"})
    assert accepted.status_code == 202, accepted.text
    snapshot = Snapshot.model_validate(accepted.json())
    assert snapshot.status.state == "Creating" and snapshot.name == "before-import"
    ready = wait_until(
        lambda: (s := api.get(f"/snapshots/{snapshot.id}").json())["status"]["state"] == "Ready" and s,
        what="the snapshot to be Ready",
    )
    assert ready["sandboxId"] == source
    assert api.get(f"/sandboxes/{source}").json()["status"]["state"] == "Running"  # thawed again

    listed = ListSnapshotsResponse.model_validate(api.get("/snapshots", params={"sandboxId": source}).json())
    assert [s.id for s in listed.items] == [snapshot.id]
    assert api.get("/snapshots", params={"sandboxId": source, "state": "Failed"}).json()["items"] == []

    restored = make_sandbox(["sh", "-c", READ], snapshotId=snapshot.id, image=None)
    text = _logs_containing(api, restored["id"], "read-done")
    assert "snapshot-data" in text and "home-data" in text
    full = api.get(f"/sandboxes/{restored['id']}").json()
    assert full["snapshotId"] == snapshot.id and "image" not in full

    default = make_sandbox(None, snapshotId=snapshot.id, image=None)
    assert default["entrypoint"] == ["tail", "-f", "/dev/null"]

    assert api.delete(f"/snapshots/{snapshot.id}").status_code == 204
    assert api.get(f"/snapshots/{snapshot.id}").status_code == 404
    gone = api.post("/sandboxes", json={"snapshotId": snapshot.id})
    assert gone.status_code == 400 and gone.json()["code"] == "SNAPSHOT::SNAPSHOT_NOT_FOUND"


def test_snapshot_errors(api: httpx2.Client, make_sandbox: Any) -> None:
    assert api.post("/sandboxes/unknown/snapshots", json={}).status_code == 404
    sandbox_id = make_sandbox()["id"]
    assert api.post(f"/sandboxes/{sandbox_id}/snapshots", json={"name": ""}).status_code == 400
    bad_page = api.get("/snapshots", params={"pageSize": 500})
    assert bad_page.status_code == 400 and bad_page.json()["code"] == "SNAPSHOT::INVALID_PARAMETER"
    assert api.delete("/snapshots/unknown").status_code == 404
    # A body is optional.
    unnamed = api.post(f"/sandboxes/{sandbox_id}/snapshots")
    assert unnamed.status_code == 202 and "name" not in unnamed.json()
    snapshot_id = unnamed.json()["id"]
    wait_until(
        lambda: api.get(f"/snapshots/{snapshot_id}").json()["status"]["state"] == "Ready",
        what="the snapshot to be Ready",
    )
    assert api.delete(f"/snapshots/{snapshot_id}").status_code == 204
