"""A hostile sandbox on a real `osbox serve`, and what must stay unchanged outside its view.

One server and one hostile sandbox per test module: the sandbox has a named volume (`pvc`) at
`/mnt/shared` and builds hypothesis-generated layouts in its own trees; the tests then drive the
server's file, volume, snapshot, code-context and proxy paths at them. After every example,
`Hostile.assert_outside_unchanged()` compares digests (paths, modes, owners, content hashes) of

- the host canary (`canary.Canary`): a root-owned tree, with a root-only socket counting accepts,
  which the layouts' symlinks aim at; and
- the server's data dir, except what is legitimately the hostile sandbox's or the server's churn:
  `osbox.db*` (records and events: every request writes them), the hostile sandbox's state dir
  and execd log dir (its own files, its commands' logs) and its claim's directory under `volumes/`
  (mounted read-write in its view at `/mnt/shared`). Everything else there (other sandboxes, every
  snapshot, other volumes, the dirs' own modes) must be as it was once each example has deleted
  what it created. The warm pool is off, so no pool sandbox comes and goes meanwhile.
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from tests.adversarial.canary import Canary, tree_digest
from tests.adversarial.layouts import Entry, build_script
from tests.integration.conftest import bwrap_missing
from tests.integration.server_fixtures import API_KEY, lifecycle_client
from tests.polling import wait_until

#: Bounds every request: a refusal takes milliseconds, a kernel start about a second.
REQUEST_TIMEOUT_S = 90.0


@dataclass
class Hostile:
    """The hostile sandbox, clients for the lifecycle API and for its execd (through the proxy)."""

    server: LocalServer
    api: httpx2.Client
    execd: httpx2.Client
    sandbox_id: str
    claim: str
    canary: Canary
    baseline: tuple[Any, Any] | None = None

    @property
    def paths(self) -> dict[str, str]:
        """What `{canary}` and `{data}` in a layout stand for."""
        return {"canary": str(self.canary.root), "data": str(self.server.data_dir)}

    @property
    def state_dir(self) -> Path:
        """The sandbox's state dir on the host (its `/workspace` is `fs/workspace` in it)."""
        return self.server.data_dir / "sandboxes" / self.sandbox_id

    def sh(self, script: str) -> str:
        """Run a shell script in the sandbox; returns its stdout."""
        response = self.execd.post("/command", json={"command": f"timeout 30 bash -c {shlex.quote(script)}"})
        assert response.status_code == 200, response.text
        return "".join(_stdout(response.text))

    def build(self, root: str, layout: Sequence[Entry]) -> None:
        """Make `layout` under `root` inside the sandbox (what cannot be made is left out)."""
        self.sh(build_script(root, layout, self.paths))

    def outside(self) -> tuple[Any, Any]:
        """Digests of the canary and of the data dir minus the hostile sandbox's own state."""
        data = self.server.data_dir
        mine = [
            data / "osbox.db",
            data / "osbox.db-wal",
            data / "osbox.db-shm",
            self.state_dir,
            data / "volumes" / self.claim,
            data / "execd" / self.sandbox_id,  # its command logs
        ]
        return self.canary.digest(), tree_digest(data, exclude=mine)

    def assert_outside_unchanged(self) -> None:
        assert self.baseline is not None
        canary, data = self.outside()
        assert canary == self.baseline[0], "the host canary changed"
        assert data == self.baseline[1], "the server's data dir changed outside the sandbox's own state"
        assert self.canary.listener.accepted == 0, "the server connected to the root-only host socket"
        assert self.api.get("/sandboxes/" + self.sandbox_id).json()["status"]["state"] == "Running"


def _stdout(stream: str) -> Iterator[str]:
    for block in stream.split("\n\n"):
        if block.strip():
            event = json.loads(block)
            if event.get("type") == "stdout":
                yield event.get("text", "")


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    """A server (warm pool off), the canary, and the hostile sandbox; all removed afterwards."""
    missing = bwrap_missing()
    if missing:
        pytest.skip(missing)
    canary = Canary.make()
    try:
        with (
            LocalServer(api_key=API_KEY, warm_pool_size=0) as server,
            lifecycle_client(server) as api,
        ):
            claim = f"hostile-{secrets.token_hex(4)}"
            created = api.post(
                "/sandboxes",
                json={
                    "image": {"uri": "python:3.11"},
                    "entrypoint": ["tail", "-f", "/dev/null"],
                    "volumes": [{"name": "shared", "mountPath": "/mnt/shared", "pvc": {"claimName": claim}}],
                },
            )
            assert created.status_code == 202 and created.json()["status"]["state"] == "Running", created.text
            sandbox_id = created.json()["id"]
            endpoint = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()
            with httpx2.Client(
                base_url=f"{server.base_url}/sandboxes/{sandbox_id}/proxy/44772",
                headers=endpoint["headers"],
                timeout=REQUEST_TIMEOUT_S,
            ) as execd:
                wait_until(lambda: execd.get("/ping").status_code == 200, what="execd to answer")
                sandbox = Hostile(server, api, execd, sandbox_id, claim, canary)
                sandbox.sh("true")  # its command-log dir now exists: the baseline has it
                sandbox.baseline = sandbox.outside()
                yield sandbox
    finally:
        canary.remove()
