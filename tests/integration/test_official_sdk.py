"""The official `opensandbox` Python SDK, unchanged, drives `osbox serve`.

create → run a command with streamed output → write and read a file → list → kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

opensandbox = pytest.importorskip(
    "opensandbox", reason="the official SDK is not installed (pip install opensandbox)"
)

from opensandbox import SandboxManagerSync, SandboxSync  # noqa: E402
from opensandbox.config import ConnectionConfigSync  # noqa: E402
from opensandbox.models.execd_sync import ExecutionHandlersSync  # noqa: E402
from opensandbox.models.sandboxes import SandboxFilter  # noqa: E402

from osbox.server import LocalServer  # noqa: E402

from .conftest import requires_bwrap  # noqa: E402

pytestmark = requires_bwrap


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key="official-sdk-test-key") as srv:
        yield srv


@pytest.fixture
def config(server: LocalServer) -> ConnectionConfigSync:
    return ConnectionConfigSync(
        api_key="official-sdk-test-key",
        domain=urlsplit(server.base_url).netloc,
        protocol="http",
        request_timeout=timedelta(seconds=30),
    )


def test_official_sdk_full_flow(config: ConnectionConfigSync) -> None:
    sandbox = SandboxSync.create(
        "python:3.11",
        entrypoint=["tail", "-f", "/dev/null"],
        metadata={"suite": "official-sdk"},
        timeout=timedelta(minutes=10),
        connection_config=config,
    )
    try:
        lines: list[str] = []
        execution = sandbox.commands.run(
            "echo hello; echo world; echo oops >&2",
            handlers=ExecutionHandlersSync(on_stdout=lambda msg: lines.append(msg.text)),
        )
        assert execution.error is None
        assert [line.strip() for line in lines] == ["hello", "world"]
        assert [m.text.strip() for m in execution.logs.stderr] == ["oops"]

        sandbox.files.write_file("/workspace/greeting.txt", "hi from the official SDK\n")
        assert sandbox.files.read_file("/workspace/greeting.txt") == "hi from the official SDK\n"

        manager = SandboxManagerSync.create(connection_config=config)
        try:
            listed = manager.list_sandbox_infos(SandboxFilter(metadata={"suite": "official-sdk"}))
            assert [info.id for info in listed.sandbox_infos] == [sandbox.id]
        finally:
            manager.close()

        failing = sandbox.commands.run("exit 3")
        assert failing.error is not None
        assert failing.error.value == "3"
    finally:
        sandbox.kill()
        sandbox.close()

    manager = SandboxManagerSync.create(connection_config=config)
    try:
        remaining = manager.list_sandbox_infos(SandboxFilter(metadata={"suite": "official-sdk"}))
        assert [info.id for info in remaining.sandbox_infos] == []
    finally:
        manager.close()
