"""The file routes, through the server proxy, at hostile layouts: nothing outside the sandbox changes.

Each example builds a layout in `/workspace/adv` and sends every file operation at generated paths
into it (with `..`, `.` and empty segments): download, upload, info, permissions, replace, mkdir,
move, search, list and delete. Each must answer (no 5xx, no hang) and leave the host canary and the
server's data dir untouched; a few raw proxy paths are thrown in too.
"""

from __future__ import annotations

import json

import httpx2
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import Hostile
from tests.adversarial.layouts import Entry, layouts, probe_paths

pytestmark = pytest.mark.adversarial

ROOT = "/workspace/adv"
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _answers(response: httpx2.Response, what: str) -> None:
    assert response.status_code < 500, f"{what} answered {response.status_code}: {response.text}"


@SETTINGS
@given(layout=layouts, probes=st.lists(probe_paths, min_size=1, max_size=3))
@example(layout=[Entry("a", "fifo"), Entry("b", "symlink", "{canary}/file")], probes=["a", "b", ""])
def test_file_routes_at_hostile_layouts(hostile: Hostile, layout: list[Entry], probes: list[str]) -> None:
    hostile.build(ROOT, layout)
    execd = hostile.execd
    for probe in probes:
        path = f"{ROOT}/{probe}"
        _answers(execd.get("/files/download", params={"path": path}), f"download {path}")
        metadata = json.dumps({"path": path, "mode": 777}).encode()
        upload = execd.post(
            "/files/upload",
            files=[("metadata", ("m", metadata, "application/json")), ("file", ("f", b"pwned", "x/y"))],
        )
        _answers(upload, f"upload {path}")
        _answers(execd.get("/files/info", params={"path": path}), f"info {path}")
        permissions = execd.post("/files/permissions", json={path: {"mode": 777, "owner": "root"}})
        _answers(permissions, f"permissions {path}")
        replace = execd.post("/files/replace", json={path: {"old": "hostile", "new": "pwned"}})
        _answers(replace, f"replace {path}")
        _answers(execd.post("/directories", json={path: {"mode": 777}}), f"mkdir {path}")
        move = execd.post("/files/mv", json=[{"src": path, "dest": f"{ROOT}/moved/{probe}"}])
        _answers(move, f"move {path}")
        search = execd.get("/files/search", params={"path": path, "pattern": "*"})
        _answers(search, f"search {path}")
        listing = execd.get("/directories/list", params={"path": path, "depth": 3})
        _answers(listing, f"list {path}")
        _answers(execd.delete("/files", params={"path": path}), f"delete {path}")
        # The proxy itself, with the probe as a raw path under the execd port.
        _answers(execd.get(f"/{probe}"), f"proxy /{probe}")
    hostile.assert_outside_unchanged()
