"""Bash sessions and metrics against a real sandbox."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest

from osbox.server._backend.base import SandboxSpec
from osbox.server.execd.metrics import WATCH_INTERVAL_SECONDS
from tests.integration.execd_fixtures import Execd, check_spec, parse_events


async def run_in(execd: Execd, session_id: str, command: str, **options: object) -> list[dict[str, object]]:
    response = await execd.client.post(f"/session/{session_id}/run", json={"command": command, **options})
    assert response.status_code == 200, response.text
    return parse_events(response.text)


def stdout(events: list[dict[str, object]]) -> list[object]:
    return [e["text"] for e in events if e["type"] == "stdout"]


async def test_session_keeps_exported_env_and_cwd(execd: Execd) -> None:
    created = await execd.client.post("/session", json={"cwd": "/workspace/proj"})
    check_spec(created)
    session_id = created.json()["session_id"]
    events = await run_in(execd, session_id, "pwd; export A=1; B=2; cd /tmp; echo err >&2")
    assert events[0] == {**events[0], "type": "init", "text": session_id}
    assert stdout(events) == ["/workspace/proj", "err"], "stderr is merged into stdout"
    assert events[-1]["type"] == "execution_complete"
    events = await run_in(execd, session_id, 'pwd; echo "A=$A B=$B"')
    assert stdout(events) == ["/tmp", "A=1 B="]
    events = await run_in(execd, session_id, "pwd", cwd="/workspace")
    assert stdout(events) == ["/workspace"]
    events = await run_in(execd, session_id, "pwd; exit 4")
    assert stdout(events) == ["/workspace"], "a per-run cwd sticks"
    assert events[-1]["type"] == "error" and events[-1]["error"]["evalue"] == "4"  # type: ignore[index]


async def test_session_empty_body_timeout_and_delete(execd: Execd) -> None:
    created = await execd.client.post("/session")
    assert created.status_code == 200
    session_id = created.json()["session_id"]
    events = await run_in(execd, session_id, "sleep 30", timeout=200)
    assert events[-1]["type"] == "error" and events[-1]["error"]["evalue"] == "137"  # type: ignore[index]
    deleted = await execd.client.delete(f"/session/{session_id}")
    assert deleted.status_code == 200
    gone = await execd.client.delete(f"/session/{session_id}")
    assert gone.status_code == 404 and gone.json()["code"] == "CONTEXT_NOT_FOUND"
    run_gone = await execd.client.post(f"/session/{session_id}/run", json={"command": "true"})
    assert run_gone.status_code == 404 and run_gone.json()["code"] == "CONTEXT_NOT_FOUND"


async def test_session_bad_requests(execd: Execd) -> None:
    session_id = (await execd.client.post("/session", json={})).json()["session_id"]
    no_command = await execd.client.post(f"/session/{session_id}/run", json={})
    assert no_command.status_code == 400
    bad_cwd = await execd.client.post(
        f"/session/{session_id}/run", json={"command": "true", "cwd": "/no/such/dir"}
    )
    assert bad_cwd.status_code == 400 and bad_cwd.json()["code"] == "INVALID_REQUEST_BODY"
    assert bad_cwd.json()["message"].startswith("invalid cwd")
    bad_json = await execd.client.post(
        f"/session/{session_id}/run", content=b"[", headers={"content-type": "x"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "INVALID_REQUEST_BODY"
    bad_body = await execd.client.post("/session", content=b"{oops")
    assert bad_body.status_code == 400


async def test_delete_session_kills_its_running_command(execd: Execd) -> None:
    session_id = (await execd.client.post("/session")).json()["session_id"]
    async with execd.live_client() as client:
        parts: list[str] = []
        deleter: asyncio.Task[httpx2.Response] | None = None
        run = client.stream("POST", f"/session/{session_id}/run", json={"command": "sleep 60"})
        async with run as stream:
            async for chunk in stream.aiter_text():
                parts.append(chunk)
                if deleter is None and "init" in chunk:
                    deleter = asyncio.create_task(client.delete("/command", params={"id": session_id}))
        assert deleter is not None and (await deleter).status_code == 200
    assert '"evalue":"137","traceback":["signal: killed"]},"signal":"SIGKILL"' in "".join(parts)


async def test_metrics(execd: Execd) -> None:
    response = await execd.client.get("/metrics")
    check_spec(response)
    body = response.json()
    assert body["cpu_count"] > 0 and 0 <= body["cpu_used_pct"] <= 100
    assert 0 < body["mem_used_mib"] <= body["mem_total_mib"]
    assert body["timestamp"] > 1_600_000_000_000


class StrictSSEParser:
    """Server-Sent Events as the HTML spec (and the Go SDK) parse them: an event is dispatched only
    when the blank line that ends it arrives; `data:` lines are joined, other fields ignored."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        """Add received text; return the data of each event it completes."""
        self._pending += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._pending = self._pending.split("\n")
        dispatched: list[str] = []
        for line in lines:
            if line == "":
                if self._data:
                    dispatched.append("\n".join(self._data))
                self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
        return dispatched


def test_the_strict_sse_parser_dispatches_only_on_the_blank_line() -> None:
    parser = StrictSSEParser()
    assert parser.feed('{"a":1}\n') == []  # NDJSON: never dispatched
    assert parser.feed('data: {"b":2}\n') == []
    assert parser.feed("\n") == ['{"b":2}']


async def test_metrics_watch_sends_an_sse_event_per_sample_each_second(execd: Execd) -> None:
    parser = StrictSSEParser()
    samples: list[dict[str, float]] = []
    async with execd.live_client() as client, client.stream("GET", "/metrics/watch") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for chunk in stream.aiter_text():
            samples += [json.loads(data) for data in parser.feed(chunk)]
            if len(samples) >= 3:
                break  # dispatched while the stream is still open
    assert all(
        {"cpu_count", "cpu_used_pct", "mem_total_mib", "mem_used_mib", "timestamp"} <= set(s) for s in samples
    )
    assert WATCH_INTERVAL_SECONDS == 1.0  # the spec's interval
    # Samples are paced by the interval: the next starts a second after the one before started.
    assert samples[2]["timestamp"] - samples[1]["timestamp"] >= 500


async def test_metrics_reflect_the_sandbox_limits(execd: Execd) -> None:
    spec = SandboxSpec(
        sandbox_id="lim" + execd.handle.sandbox_id,
        entrypoint=["tail", "-f", "/dev/null"],
        state_dir=execd.state_dir.parent / "limited",
        cpu_cores=0.5,
        memory_bytes=256 * 1024 * 1024,
    )
    limited = await execd.backend.create(spec)
    try:
        if not limited.limits_enforced:
            pytest.skip(f"cgroup limits not enforced here: {limited.limits_message}")
        body = await execd.service._metrics.snapshot(limited)
        assert body["cpu_count"] == 0.5
        assert body["mem_total_mib"] == 256
        assert 0 < body["mem_used_mib"] < 256
    finally:
        await execd.backend.destroy(limited)
        await execd.service.forget(limited.sandbox_id)
