"""Fixtures for tests of `osbox serve`: a real `LocalServer`, a spec-checking client, sandboxes.

Registered as a plugin from `tests/conftest.py`. Every response a `lifecycle` client receives
from a lifecycle or diagnostics route is validated against the official OpenAPI documents.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import psutil  # type: ignore[import-untyped]
import pytest

from osbox import Sandbox
from osbox.server import LocalServer
from tests.integration.conftest import bwrap_missing, requires_bwrap
from tests.sandbox_image import SESSION_PROCESSES
from tests.spec_check import SpecCheck, specs_dir

API_KEY = "test-api-key-0123456789"
T = TypeVar("T")


#: Tests that need real sandboxes skip, saying what is missing, where they cannot run.
requires_runtime = requires_bwrap


def _spec_hook(base_url: str) -> Callable[[httpx2.Response], None]:
    """A response hook validating lifecycle and diagnostics answers against the specs."""
    have_specs = (specs_dir() / "sandbox-lifecycle.yml").exists()

    def check(response: httpx2.Response) -> None:
        path = response.request.url.path
        if not have_specs or "/proxy/" in path or path.endswith("/health"):
            return
        response.read()
        api = "diagnostic" if "/diagnostics/" in path else "lifecycle"
        content_type = response.headers.get("content-type", "application/json").split(";")[0]
        body: Any = response.json() if content_type == "application/json" and response.content else b""
        SpecCheck.load().response(
            api, response.request, base_url=base_url, status=response.status_code, body=body,
            content_type=content_type,
        )  # fmt: skip

    return check


def lifecycle_client(server: LocalServer, *, api_key: str | None = API_KEY) -> httpx2.Client:
    """An httpx2 client for `server`'s `/v1` routes that checks every answer against the spec."""
    base_url = server.base_url + "/v1"
    headers = {"OPEN-SANDBOX-API-KEY": api_key} if api_key else {}
    return httpx2.Client(
        base_url=base_url, headers=headers, timeout=60, event_hooks={"response": [_spec_hook(base_url)]}
    )


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A fresh host directory whose parents the unprivileged sandbox user can traverse.

    pytest's `tmp_path` lives under a root-only directory, which the backend rightly refuses as a
    data dir or a host volume.
    """
    directory = Path(tempfile.mkdtemp(prefix="osbox-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def lifecycle_server() -> Iterator[LocalServer]:
    """One LocalServer per test module, with expiry allowed from 1 second."""
    missing = bwrap_missing()
    if missing:
        pytest.skip(missing)
    with LocalServer(api_key=API_KEY, min_timeout_seconds=1) as server:
        data_dir = server.data_dir
        yield server
    # Nothing outlives the server: no sandbox process, no temporary data dir.
    assert not data_dir.exists()
    assert_no_sandbox_processes()


@pytest.fixture(scope="module")
def module_sandbox(lifecycle_server: LocalServer) -> Iterator[Sandbox]:
    """One SDK `Sandbox` per test module, on `lifecycle_server`; deleted at the module's end."""
    with Sandbox.create(base_url=lifecycle_server.base_url + "/v1", api_key=API_KEY) as created:
        yield created


def sandbox_process_ids() -> set[int]:
    """Pids of the processes started under this test process (e.g. a module server's warm pool)."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def assert_no_sandbox_processes(ignore: Collection[int] = ()) -> None:
    """Fail if a process started under this test process is still alive (zombies are reaped).

    `ignore`: pids that were there before (another server's pre-started sandboxes).
    """
    alive = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in ignore or child.pid in SESSION_PROCESSES:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                child.wait(timeout=5)
            else:
                alive.append(" ".join(child.cmdline()))
        except psutil.Error:
            continue
    assert alive == [], f"processes left behind: {alive}"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    """A LocalServer for the module's SDK tests (a module may define its own `server` instead)."""
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def sandbox(server: LocalServer) -> Iterator[Sandbox]:
    """One ready sandbox of `server` (`python:3.11`) shared by the module's tests."""
    with Sandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as created:
        yield created


@pytest.fixture
def api(lifecycle_server: LocalServer) -> Iterator[httpx2.Client]:
    """A spec-checking client for the module's server."""
    with lifecycle_client(lifecycle_server) as client:
        yield client


@pytest.fixture
def make_sandbox(api: httpx2.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create sandboxes (Running asserted); whatever a test leaves behind is deleted afterwards."""
    created: list[str] = []

    def make(entrypoint: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        body = {
            "image": {"uri": "python:3.11"},
            "entrypoint": entrypoint or ["tail", "-f", "/dev/null"],
            "resourceLimits": {"cpu": "500m", "memory": "512Mi"},
            **fields,
        }
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 202, response.text
        sandbox: dict[str, Any] = response.json()
        created.append(sandbox["id"])
        assert sandbox["status"]["state"] == "Running", sandbox["status"]
        return sandbox

    yield make
    for sandbox_id in created:
        api.delete(f"/sandboxes/{sandbox_id}")
