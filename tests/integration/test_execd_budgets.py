"""What one sandbox may hold in the execd service, and what the host keeps of a command's output.

- A flood of background commands (or sessions, or code contexts) beyond the sandbox's budget gets
  429 `LIMIT_EXCEEDED`, and another sandbox's commands and a new create still work.
- A command's log on the host stays within its cap however much it prints; cursors still work.
- A command-log dir goes with its sandbox, also when a restarted server deletes it.

Everything runs through a real server (`LocalServer`, or `osbox serve` where it must be killed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from tests.integration.server_fixtures import API_KEY, lifecycle_client, requires_runtime
from tests.integration.test_serve_cli import Serve, serve  # noqa: F401 (the `serve` fixture)
from tests.polling import wait_until

pytestmark = [requires_runtime, pytest.mark.timeout(180)]

_BODY: dict[str, Any] = {
    "image": {"uri": "python:3.11"},
    "entrypoint": ["tail", "-f", "/dev/null"],
    "resourceLimits": {"cpu": "1", "memory": "512Mi"},
}


def _execd(base_url: str, api: httpx2.Client, sandbox_id: str) -> httpx2.Client:
    """A client for the sandbox's execd API through the server's proxy route."""
    endpoint = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()
    return httpx2.Client(
        base_url=f"{base_url}/sandboxes/{sandbox_id}/proxy/44772", headers=endpoint["headers"], timeout=60
    )


def _events(response: httpx2.Response) -> list[dict[str, Any]]:
    return [json.loads(part) for part in response.text.split("\n\n") if part.strip()]


def _background(execd: httpx2.Client, command: str) -> httpx2.Response:
    return execd.post("/command", json={"command": command, "background": True})


def _command_id(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    init = _events(response)[0]
    assert init["type"] == "init"
    return str(init["text"])


def _wait_finished(execd: httpx2.Client, command_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = execd.get(f"/command/status/{command_id}").json()
        return None if status["running"] else status

    return wait_until(finished, timeout=120, what=f"command {command_id} to finish")


#: The default budgets (`ServerConfig`).
_MAX_RUNNING_COMMANDS = 64
_MAX_SESSIONS = 32


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server with the default budgets."""
    with LocalServer(api_key=API_KEY) as running:
        yield running


def _create(api: httpx2.Client) -> str:
    response = api.post("/sandboxes", json=_BODY)
    assert response.status_code == 202 and response.json()["status"]["state"] == "Running", response.text
    return str(response.json()["id"])


def test_a_command_flood_gets_429s_and_other_sandboxes_carry_on(server: LocalServer) -> None:
    with lifecycle_client(server) as api:
        flooding, other = _create(api), _create(api)
        with _execd(server.base_url, api, flooding) as execd, _execd(server.base_url, api, other) as calm:
            answers = [_background(execd, "sleep 300") for _ in range(_MAX_RUNNING_COMMANDS + 6)]
            started = [_command_id(a) for a in answers if a.status_code == 200]
            refused = [a for a in answers if a.status_code != 200]
            assert len(started) == _MAX_RUNNING_COMMANDS and len(refused) == 6
            for answer in refused:
                assert answer.status_code == 429
                body = answer.json()
                assert body["code"] == "LIMIT_EXCEEDED", body
                assert f"{_MAX_RUNNING_COMMANDS} running commands" in body["message"], body

            # The other sandbox, and a new one, are not affected.
            ran = calm.post("/command", json={"command": "echo calm"})
            assert (
                ran.status_code == 200
                and {"type": "stdout", "text": "calm"}.items() <= _events(ran)[1].items()
            )
            assert _create(api)

            # Ending one frees its place.
            assert execd.delete("/command", params={"id": started[0]}).status_code == 200
            assert _background(execd, "true").status_code == 200


def test_sessions_have_a_budget_too(server: LocalServer) -> None:
    with lifecycle_client(server) as api, _execd(server.base_url, api, _create(api)) as execd:
        answers = [execd.post("/session", json={}).status_code for _ in range(_MAX_SESSIONS + 1)]
        assert answers == [200] * _MAX_SESSIONS + [429]
        assert f"{_MAX_SESSIONS} sessions" in execd.post("/session", json={}).json()["message"]


def test_code_contexts_have_a_budget_set_by_the_config() -> None:
    with (
        LocalServer(api_key=API_KEY, max_code_contexts=0, warm_pool_size=0) as server,
        lifecycle_client(server) as api,
        _execd(server.base_url, api, _create(api)) as execd,
    ):
        context = execd.post("/code/context", json={"language": "python"})
        assert context.status_code == 429 and context.json()["code"] == "LIMIT_EXCEEDED"
        assert "0 code contexts" in context.json()["message"]


def test_a_huge_output_keeps_only_the_newest_part_on_the_host(reachable_dir: Path) -> None:
    total = 200_000_000
    cap = 64 * 1024 * 1024  # the default
    with (
        LocalServer(data_dir=reachable_dir / "data", api_key=API_KEY) as server,
        lifecycle_client(server) as api,
    ):
        sandbox_id = _create(api)
        with _execd(server.base_url, api, sandbox_id) as execd:
            command_id = _command_id(_background(execd, f"yes abcdefghi | head -c {total}"))
            assert _wait_finished(execd, command_id)["exit_code"] == 0
            logs = [path for path in (server.data_dir / "execd").rglob("*") if path.is_file()]
            kept = sum(path.stat().st_size for path in logs)
            assert cap // 2 <= kept <= cap

            # From cursor 0, the log reads on from the oldest byte kept and says what it skipped.
            first = execd.get(f"/command/{command_id}/logs", params={"cursor": 0})
            assert first.status_code == 200
            assert int(first.headers["EXECD-COMMANDS-LOG-DROPPED"]) == total - kept
            read, cursor = first.content, int(first.headers["EXECD-COMMANDS-TAIL-CURSOR"])
            while cursor < total:
                more = execd.get(f"/command/{command_id}/logs", params={"cursor": cursor})
                assert "EXECD-COMMANDS-LOG-DROPPED" not in more.headers
                read += more.content
                cursor = int(more.headers["EXECD-COMMANDS-TAIL-CURSOR"])
            assert cursor == total and len(read) == kept
            assert read.endswith(b"abcdefghi\n") and set(read.split(b"\n")[1:-1]) == {b"abcdefghi"}
            at_end = execd.get(f"/command/{command_id}/logs", params={"cursor": total})
            assert at_end.content == b"" and at_end.headers["EXECD-COMMANDS-TAIL-CURSOR"] == str(total)


def test_a_readopted_sandbox_takes_its_command_logs_along(
    serve: type[Serve],  # noqa: F811 (the fixture)
    reachable_dir: Path,
) -> None:
    data_dir = reachable_dir / "data"
    first = serve("--data-dir", str(data_dir), "--warm-pool", "0")
    first.wait_healthy()
    with httpx2.Client(base_url=f"{first.url}/v1", timeout=60) as api:
        sandbox_id = _create(api)
        with _execd(first.url, api, sandbox_id) as execd:
            _wait_finished(execd, _command_id(_background(execd, "echo logged")))
    logs = data_dir / "execd"
    assert [p for p in logs.iterdir() if p.name.startswith(sandbox_id)], "the command wrote no log"
    first.process.kill()  # kill -9: no clean-up at all
    first.process.communicate()

    with LocalServer(data_dir=data_dir) as second, lifecycle_client(second, api_key=None) as api:
        assert api.get(f"/sandboxes/{sandbox_id}").json()["status"]["state"] == "Running"
        assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert [p.name for p in logs.iterdir() if p.name.startswith(sandbox_id)] == []
