"""The whole server (lifecycle API, proxy, execd) over the fake backend (`tests/fake_backend.py`):
the sandbox life cycle and the way into a sandbox's execd, with no namespaces. The lifecycle layer
sees only `_backend/base.py`; bubblewrap's own behaviour is tested in tests/integration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from osbox import AsyncExecdClient, AsyncLifecycleClient, NotFoundError
from osbox.server import AsyncLocalServer
from tests.fake_backend import FakeBackend

API_KEY = "fake-backend-key"


@dataclass
class Running:
    backend: FakeBackend
    lifecycle: AsyncLifecycleClient


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    backend = FakeBackend()
    async with (
        AsyncLocalServer(api_key=API_KEY, backend=backend) as server,
        AsyncLifecycleClient(f"{server.base_url}/v1", API_KEY) as lifecycle,
    ):
        yield Running(backend, lifecycle)


async def test_a_sandbox_lives_pauses_resumes_and_dies_through_the_interface(running: Running) -> None:
    created = await running.lifecycle.create_sandbox(image="fake", entrypoint=["sleep", "3600"], timeout=600)
    assert created.status.state == "Running"
    sandbox = running.backend.sandboxes[created.id]
    assert "fake test backend" in (created.status.message or "")
    assert [s.id for s in (await running.lifecycle.list_sandboxes()).items] == [created.id]

    await running.lifecycle.pause_sandbox(created.id)
    assert (await running.lifecycle.get_sandbox(created.id)).status.state == "Paused"
    await running.lifecycle.resume_sandbox(created.id)
    assert (await running.lifecycle.get_sandbox(created.id)).status.state == "Running"

    await running.lifecycle.delete_sandbox(created.id)
    assert sandbox.destroyed and created.id not in running.backend.sandboxes
    assert all(process.exited for process in sandbox.processes)
    with pytest.raises(NotFoundError):
        await running.lifecycle.get_sandbox(created.id)


async def test_the_proxy_hands_execd_its_sandbox(running: Running) -> None:
    created = await running.lifecycle.create_sandbox(image="fake", entrypoint=["sleep", "3600"], timeout=600)
    endpoint = await running.lifecycle.get_endpoint(created.id, 44772)
    async with AsyncExecdClient.from_endpoint(endpoint) as execd:
        result = await execd.run_command("echo from-the-fake > note.txt; cat note.txt").run()
        assert result.stdout == "from-the-fake\n"
        info = await execd.get_file_info(["/workspace/note.txt"])
        assert info["/workspace/note.txt"].size == len("from-the-fake\n")
    root = running.backend.sandboxes[created.id].root
    assert (root / "workspace" / "note.txt").read_text() == "from-the-fake\n"
