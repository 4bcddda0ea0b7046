"""A create that fails, at any step and however, leaves nothing behind: no record stuck `Pending`,
no process, no cgroup, no pre-started sandbox taken from the warm pool and never given back.

Each test runs a real `LocalServer` (warm pool on or off) and counts what exists before and after:
the processes under this test process (the server runs in a thread here, so its sandboxes are
our descendants), the warm pool's state dirs, and the cgroups named after the sandboxes involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from osbox.server._backend.base import SandboxSpec
from osbox.server._backend.bwrap.backend import BwrapBackend, BwrapSandbox
from osbox.server._backend.bwrap.cgroups import CgroupLayout
from osbox.server._store import Store
from osbox.server.lifecycle.manager import SandboxManager
from osbox.server.lifecycle.records import SandboxRecord
from tests.integration.server_fixtures import (
    API_KEY,
    assert_no_sandbox_processes,
    lifecycle_client,
    requires_runtime,
    sandbox_process_ids,
)
from tests.integration.test_lifecycle_restart import _uid, kill_tree, sandbox_processes
from tests.polling import wait_until

pytestmark = [requires_runtime, pytest.mark.timeout(120)]

_BODY: dict[str, Any] = {
    "image": {"uri": "python:3.11"},
    "entrypoint": ["tail", "-f", "/dev/null"],
    "resourceLimits": {"cpu": "500m", "memory": "256Mi"},
}


class Injected(RuntimeError):
    """The unexpected failure a test injects into one step of a create."""


@pytest.fixture(params=[2, 0], ids=["warm-pool", "no-pool"])
def server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A LocalServer with a full warm pool of `param` sandboxes (or none)."""
    with LocalServer(api_key=API_KEY, warm_pool_size=request.param) as running:
        wait_until(lambda: len(_pool_dirs(running)) == request.param, what="a full warm pool")
        yield running


def _pool_dirs(server: LocalServer) -> set[str]:
    """Tokens of the warm pool's ready sandboxes: each lives in `pool/<token>` until taken, and is
    ready once its re-adoption record (the last thing a start writes) is there."""
    pool = server.data_dir / "pool"
    entries = pool.iterdir() if pool.is_dir() else iter(())
    return {entry.name for entry in entries if (entry / "run" / "agent.json").exists()}


def _existing_cgroups(names: set[str]) -> set[str]:
    """Which of these cgroup names exist under any of the server's cgroup parents."""
    parents = CgroupLayout.detect().parents.values()
    return {name for name in names for parent in parents if (parent / name).is_dir()}


def _create_and_check_nothing_is_left(server: LocalServer, body: dict[str, Any]) -> httpx2.Response:
    """POST `body` (which must fail), then wait for the pool to refill and check what is left."""
    pool_size = server.config.warm_pool_size if server.config is not None else 0
    processes_before = len(sandbox_process_ids())
    pool_before = _pool_dirs(server)
    with lifecycle_client(server) as api:
        response = api.post("/sandboxes", json=body)
        assert response.status_code in (202, 400), response.text  # a bad input may be refused first
        if response.status_code == 202:
            created = response.json()
            assert created["status"]["state"] == "Failed", created["status"]
            status = api.get(f"/sandboxes/{created['id']}").json()["status"]
            assert status["state"] == "Failed" and status["reason"] and status["message"], status
        assert api.get("/sandboxes", params={"state": "Pending"}).json()["items"] == []
        # The pool refills to its size, and no process more than before runs: none was leaked.
        wait_until(
            lambda: len(_pool_dirs(server)) == pool_size and len(sandbox_process_ids()) == processes_before,
            what="the warm pool refilled and no extra sandbox process",
        )
        gone_from_pool = {f"osbox-pool-{token}" for token in pool_before - _pool_dirs(server)}
        failed = {f"osbox-{response.json()['id']}"} if response.status_code == 202 else set()
        assert _existing_cgroups(gone_from_pool | failed) == set()
        if response.status_code == 202:  # the Failed record goes away like any other, files included
            assert api.delete(f"/sandboxes/{response.json()['id']}").status_code == 204
            assert not (server.data_dir / "sandboxes" / response.json()["id"]).exists()
    return response


def test_an_overflowing_cpu_leaves_nothing_behind(server: LocalServer) -> None:
    response = _create_and_check_nothing_is_left(server, {**_BODY, "resourceLimits": {"cpu": "9" * 400}})
    assert response.status_code != 500


def test_a_backend_step_failing_unexpectedly_leaves_nothing_behind(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entrypoint's start (the last step, on both the pool's and the fresh path) raises a bug."""

    async def broken_start(self: BwrapBackend, handle: BwrapSandbox, spec: SandboxSpec, **_: Any) -> None:
        raise Injected("injected by the test")

    monkeypatch.setattr(BwrapBackend, "_start_entrypoint", broken_start)
    response = _create_and_check_nothing_is_left(server, _BODY)
    status = response.json()["status"]
    assert status["reason"] == "runtime_error" and "Injected" in status["message"]
    assert "injected by the test" not in status["message"]  # details go to the server log only


def test_a_failure_after_the_backend_started_it_leaves_nothing_behind(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox runs, then the manager fails before it is recorded Running: it is destroyed."""

    def broken_message(self: SandboxManager, *args: Any) -> str:
        raise Injected("injected by the test")

    monkeypatch.setattr(SandboxManager, "_running_message", broken_message)
    response = _create_and_check_nothing_is_left(server, _BODY)
    assert response.json()["status"]["state"] == "Failed"


def test_a_graceful_stop_destroys_a_pool_sandbox_a_failed_create_took(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`osbox serve` keeps its sandboxes on shutdown, but never the warm pool's, even one that a
    failed create took and nobody gave back."""
    data_dir = reachable_dir / "data"

    async def broken_assign(self: BwrapBackend, pooled: BwrapSandbox, spec: SandboxSpec) -> None:
        raise Injected("injected by the test")  # before the pre-started sandbox is handed over

    async def no_cleanup(self: BwrapBackend, sandbox: BwrapSandbox) -> None:
        """As if the create's own clean-up had been skipped: only the shutdown can catch it now."""

    monkeypatch.setattr(BwrapBackend, "_assign", broken_assign)
    monkeypatch.setattr(BwrapBackend, "_discard_failed", no_cleanup, raising=False)
    before = sandbox_process_ids()
    with (
        LocalServer(data_dir=data_dir, api_key=API_KEY, destroy_on_shutdown=False, warm_pool_size=1) as first,
        lifecycle_client(first) as api,
    ):
        # The pool pre-starts sandboxes of the image created last: the first create of it
        # starts its own, and the pool fills with that image for the next one.
        wait_until(lambda: len(_pool_dirs(first)) == 1, what="a full warm pool")
        blank = _pool_dirs(first)  # pre-started before any image was asked for
        started = api.post("/sandboxes", json=_BODY).json()
        assert started["status"]["state"] == "Running", started
        wait_until(lambda: _pool_dirs(first) - blank, what="a pre-started sandbox of the image")
        failed = api.post("/sandboxes", json=_BODY).json()  # what it took from the pool still runs
        assert failed["status"]["state"] == "Failed", failed["status"]
        assert api.delete(f"/sandboxes/{started['id']}").status_code == 204
    assert_no_sandbox_processes(ignore=before)
    assert not (data_dir / "pool").exists()


def test_a_create_the_server_died_in_ends_failed_at_the_next_start(reachable_dir: Path) -> None:
    """A record left `Pending` (the server was killed mid-create) is not re-adopted as if whole."""
    data_dir = reachable_dir / "data"
    with (
        LocalServer(data_dir=data_dir, api_key=API_KEY, destroy_on_shutdown=False) as first,
        lifecycle_client(first) as api,
    ):
        sandbox_id = api.post("/sandboxes", json=_BODY).json()["id"]
    uid = _uid(data_dir, sandbox_id)
    try:
        # As the store looks when the server died between starting the sandbox and recording it.
        store = Store(data_dir / "osbox.db")
        try:
            doc = store.get_sandbox(sandbox_id)
            assert doc is not None
            record = SandboxRecord.from_doc(doc)
            record.set_status("Pending", "creating", "Starting the sandbox.")
            store.put_sandbox(sandbox_id, created_at=record.created_at, state="Pending", doc=record.to_doc())
        finally:
            store.close()
        assert sandbox_processes(data_dir, sandbox_id, uid)

        with LocalServer(data_dir=data_dir, api_key=API_KEY) as second, lifecycle_client(second) as api:
            status = api.get(f"/sandboxes/{sandbox_id}").json()["status"]
            assert (status["state"], status["reason"]) == ("Failed", "server_restart"), status
            assert sandbox_processes(data_dir, sandbox_id, uid) == []
    finally:
        kill_tree(sandbox_processes(data_dir, sandbox_id, uid))
