"""`Sandbox` and `AsyncSandbox` against a real `osbox serve`: ready on return, deleted on exit, the
steps between the clients (create, wait, connect, pause/resume) on both twins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import psutil  # type: ignore[import-untyped]
import pytest

from osbox import AsyncSandbox, LifecycleClient, NotFoundError, Sandbox, SandboxError
from osbox.server import LocalServer

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def lifecycle(server: LocalServer) -> Iterator[LifecycleClient]:
    with LifecycleClient(server.base_url + "/v1", API_KEY) as client:
        yield client


def test_a_created_sandbox_runs_commands_at_once_and_is_deleted_on_exit(
    server: LocalServer, lifecycle: LifecycleClient
) -> None:
    with Sandbox.create(
        base_url=server.base_url + "/v1", api_key=API_KEY, env={"GREETING": "hi"}, metadata={"t": "sbx"}
    ) as sandbox:
        assert sandbox.info().status.state == "Running"
        result = sandbox.run("echo $GREETING from $(pwd)", cwd="/tmp")
        assert (result.exit_code, result.stdout) == (0, "hi from /tmp\n")
        sandbox.execd.upload_file("/tmp/a.txt", "content")
        assert sandbox.execd.read_file("/tmp/a.txt") == b"content"
        assert sandbox.run("exit 3").exit_code == 3  # a failed command is a result, not an exception
        sandbox_id = sandbox.id
    with pytest.raises(NotFoundError):
        lifecycle.get_sandbox(sandbox_id)
    with pytest.raises(SandboxError, match="not connected"):
        _ = sandbox.execd


def test_keep_leaves_it_running_and_connect_attaches_again(lifecycle: LifecycleClient) -> None:
    with Sandbox.create(lifecycle=lifecycle, keep=True, lifetime=None) as first:
        first.run("echo kept > /tmp/mark")
        assert first.info().expires_at is None  # lifetime=None: no expiry
    assert lifecycle.get_sandbox(first.id).status.state == "Running"
    with Sandbox.connect(first.id, lifecycle=lifecycle, keep=False) as again:
        assert again.run("cat /tmp/mark").stdout == "kept\n"
    with pytest.raises(NotFoundError):
        lifecycle.get_sandbox(first.id)


def test_pause_then_resume_returns_when_commands_run_again(lifecycle: LifecycleClient) -> None:
    with Sandbox.create(lifecycle=lifecycle) as sandbox:
        sandbox.pause()
        assert sandbox.info().status.state == "Paused"
        sandbox.resume()
        assert sandbox.run("echo back").stdout == "back\n"
        sandbox.renew(3600)
        sandbox.kill()
        sandbox.kill()  # idempotent
        with pytest.raises(NotFoundError):
            sandbox.info()


def _client_connections(server: LocalServer) -> int:
    """This process's open connections to the server (its client ends only)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)


def test_connect_to_an_unknown_sandbox_raises_and_closes_what_it_opened(server: LocalServer) -> None:
    before = _client_connections(server)
    with pytest.raises(NotFoundError):
        Sandbox.connect("no-such-sandbox", base_url=server.base_url + "/v1", api_key=API_KEY)
    assert _client_connections(server) == before


async def test_the_async_twin(server: LocalServer, lifecycle: LifecycleClient) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        assert (await sandbox.info()).status.state == "Running"
        assert (await sandbox.run("echo async")).stdout == "async\n"
        await sandbox.pause()
        await sandbox.resume()
        assert (await sandbox.run("echo again")).stdout == "again\n"
        connected = await AsyncSandbox.connect(sandbox.id, base_url=server.base_url + "/v1", api_key=API_KEY)
        async with connected:
            assert (await connected.run("echo twin")).stdout == "twin\n"
        assert lifecycle.get_sandbox(sandbox.id).status.state == "Running"  # connect keeps by default
    with pytest.raises(NotFoundError):
        lifecycle.get_sandbox(sandbox.id)


def test_create_sends_resource_limits_every_server_accepts(server: LocalServer) -> None:
    """The spec requires `resourceLimits` outside pool mode; the reference server answers 422 without."""
    sent: list[Any] = []

    def record(request: httpx2.Request) -> None:
        if (request.method, request.url.path) == ("POST", "/v1/sandboxes"):
            sent.append(json.loads(request.read())["resourceLimits"])

    with (
        httpx2.Client(event_hooks={"request": [record]}) as http,
        Sandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY, http_client=http) as sandbox,
        Sandbox.create(
            base_url=server.base_url + "/v1", api_key=API_KEY, http_client=http, resource_limits={"cpu": "2"}
        ) as other,
    ):
        assert sandbox.run("echo ok").stdout == other.run("echo ok").stdout == "ok\n"
    assert sent == [{"cpu": "1", "memory": "2Gi"}, {"cpu": "2", "memory": "2Gi"}]
