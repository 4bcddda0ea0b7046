"""Snapshots of hostile layouts: captured and restored without following anything planted.

Each example builds a layout in `/workspace/adv`, snapshots the sandbox, restores the snapshot into
a new sandbox and checks that the restored tree has the same symlinks (as symlinks, same targets),
then deletes both. The canary and the data dir must not change.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings

from tests.adversarial.conftest import Hostile
from tests.adversarial.layouts import Entry, layouts
from tests.polling import wait_until

pytestmark = pytest.mark.adversarial

SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _links(root: Path) -> dict[str, tuple[str, str]]:
    """Each entry's kind, and its target for a symlink, relative to `root` (never followed)."""
    found: dict[str, tuple[str, str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            kind = "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "other"
            found[os.path.relpath(path, root)] = (kind, os.readlink(path) if kind == "link" else "")
    return found


@SETTINGS
@given(layout=layouts)
@example(layout=[Entry("a", "symlink", "/etc"), Entry("b", "fifo"), Entry("kernels", "symlink", "{canary}")])
def test_snapshot_and_restore_of_hostile_layouts(hostile: Hostile, layout: list[Entry]) -> None:
    hostile.build("/workspace/adv", layout)
    api = hostile.api
    accepted = api.post(f"/sandboxes/{hostile.sandbox_id}/snapshots", json={})
    assert accepted.status_code == 202, accepted.text
    snapshot_id = accepted.json()["id"]

    def settled() -> dict[str, Any] | None:
        snapshot: dict[str, Any] = api.get(f"/snapshots/{snapshot_id}").json()
        return snapshot if snapshot["status"]["state"] != "Creating" else None

    snapshot = wait_until(settled, timeout=60, what="the snapshot to settle")
    assert snapshot["status"]["state"] == "Ready", snapshot
    restored = api.post("/sandboxes", json={"snapshotId": snapshot_id})
    assert restored.status_code == 202 and restored.json()["status"]["state"] == "Running", restored.text
    restored_id = restored.json()["id"]
    source = hostile.state_dir / "fs" / "workspace" / "adv"
    copy = hostile.server.data_dir / "sandboxes" / restored_id / "fs" / "workspace" / "adv"
    assert _links(copy) == {k: v for k, v in _links(source).items()}
    assert api.delete(f"/sandboxes/{restored_id}").status_code == 204
    assert api.delete(f"/snapshots/{snapshot_id}").status_code == 204
    hostile.assert_outside_unchanged()
