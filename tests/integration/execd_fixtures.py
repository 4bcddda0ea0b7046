"""A real sandbox behind the execd ASGI app, driven in-process with httpx2 (no port).

    async def test_x(execd: Execd) -> None:
        response = await execd.client.get("/ping")

The app serves one sandbox (`ExecdService.app_for`), which does what the server's proxy does: put
the sandbox's handle in the request's typed state. Everything is torn down in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from osbox.server._backend import default_backend
from osbox.server._backend.base import Backend, SandboxHandle, SandboxSpec
from osbox.server.execd import ExecdService
from tests.integration.conftest import bwrap_missing
from tests.spec_check import SpecCheck, specs_dir

BASE_URL = "http://execd.test"


@dataclass
class Execd:
    """A sandbox, the service serving it, and a client for its execd API."""

    handle: SandboxHandle
    service: ExecdService
    client: httpx2.AsyncClient
    state_dir: Path
    backend: Backend

    @contextlib.asynccontextmanager
    async def live_client(self) -> AsyncIterator[httpx2.AsyncClient]:
        """A client over a real loopback socket (uvicorn), for streams that must arrive as they go."""
        config = uvicorn.Config(
            self.service.app_for(self.handle), host="127.0.0.1", port=0, log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                yield client
        finally:
            server.should_exit = True
            await task

    async def run(self, command: str, **options: Any) -> list[dict[str, Any]]:
        """POST /command and return the parsed events."""
        response = await self.client.post("/command", json={"command": command, **options})
        assert response.status_code == 200, response.text
        return parse_events(response.text)

    async def sh(self, command: str) -> str:
        """Run a command that must succeed; return its stdout lines joined with newlines."""
        events = await self.run(command)
        assert events[-1]["type"] == "execution_complete", events
        return "\n".join(e["text"] for e in events if e["type"] == "stdout")


def parse_events(text: str) -> list[dict[str, Any]]:
    """Split a bare `JSON\\n\\n` stream into events (pings dropped)."""
    events = [json.loads(block) for block in text.split("\n\n") if block.strip()]
    return [e for e in events if e.get("type") != "ping"]


def check_spec(response: httpx2.Response) -> None:
    """Validate a response against execd-api.yaml when the specs are present."""
    if not (specs_dir() / "execd-api.yaml").exists():
        return
    content_type = response.headers.get("content-type", "application/json").split(";")[0]
    body: Any = response.content
    if content_type == "application/json" and response.content:
        body = response.json()
    SpecCheck.load().response(
        "execd", response.request, base_url=BASE_URL, status=response.status_code, body=body,
        content_type=content_type,
    )  # fmt: skip


@pytest.fixture
def sandbox_data_dir() -> Iterator[Path]:
    """A backend data dir its unprivileged sandbox user can traverse (pytest's tmp dirs are 0700)."""
    data_dir = Path(tempfile.mkdtemp(prefix="osbox-execd-test-"))
    try:
        data_dir.chmod(0o755)
        (data_dir / "sandboxes" / "t").mkdir(parents=True)
        (data_dir / "sandboxes" / "limited").mkdir()
        yield data_dir
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def execd(tmp_path: Path, sandbox_data_dir: Path) -> AsyncIterator[Execd]:
    """A fresh sandbox served by a fresh ExecdService."""
    missing = bwrap_missing()
    if missing:
        pytest.skip(missing)
    backend: Backend = default_backend(sandbox_data_dir)
    service = ExecdService(log_dir=tmp_path / "logs")
    handle: SandboxHandle | None = None
    try:
        state_dir = sandbox_data_dir / "sandboxes" / "t"
        spec = SandboxSpec(
            sandbox_id="t" + secrets.token_hex(6),
            entrypoint=["tail", "-f", "/dev/null"],
            state_dir=state_dir,
            env={"GREETING": "hello"},
        )
        handle = await backend.create(spec)
        transport = httpx2.ASGITransport(app=service.app_for(handle))
        async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as client:
            yield Execd(handle, service, client, state_dir, backend)
    finally:
        await service.aclose()
        if handle is not None:
            await backend.destroy(handle)
        await backend.close()
