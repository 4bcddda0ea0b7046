"""The steps of `Sandbox.create` on both twins, against a scripted server: what it waits for, what it
says when a sandbox never becomes ready, and that it deletes such a sandbox again.

The happy paths run against a real `osbox serve` in `tests/integration/test_sandbox.py`; the ways a
remote server can fail (stuck Pending, Failed with a reason, execd never answering) are scripted here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
import pytest

from osbox import AsyncSandbox, AuthenticationError, CommandFailedError, Sandbox, SandboxError
from osbox.models.events import Execution, ExecutionError
from tests.unit.conftest import Recorder

BASE = "http://lifecycle.test/v1"
CREATED_AT = "2026-11-26T12:00:00Z"


class Server:
    """A lifecycle + execd server whose sandbox goes through `states`, and whose execd answers a ping
    only after `ping_failures` refusals (None: never)."""

    def __init__(
        self,
        states: list[str],
        *,
        reason: str | None = None,
        ping_failures: int | None = 0,
        ping_status: int = 502,
    ) -> None:
        self.states = states
        self.reason = reason
        self.ping_failures = ping_failures
        self.ping_status = ping_status
        self.deleted = False

    def sandbox(self, state: str) -> dict[str, Any]:
        status: dict[str, Any] = {"state": state}
        if self.reason:
            status |= {"reason": self.reason, "message": "image pull failed"}
        return {"id": "sb1", "status": status, "createdAt": CREATED_AT}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        route = f"{request.method} {request.url.path}"
        if route == "POST /v1/sandboxes":
            return httpx2.Response(202, json=self.sandbox("Pending"))
        if route == "GET /v1/sandboxes/sb1":
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return httpx2.Response(200, json=self.sandbox(state))
        if route == "GET /v1/sandboxes/sb1/endpoints/44772":
            return httpx2.Response(200, json={"endpoint": "execd.test:44772", "headers": {"X-Token": "t"}})
        if route == "DELETE /v1/sandboxes/sb1":
            self.deleted = True
            return httpx2.Response(204)
        if route == "GET /ping":
            assert request.headers["X-Token"] == "t"  # the endpoint's headers reach execd
            if self.ping_failures is None or self.ping_failures > 0:
                if self.ping_failures:
                    self.ping_failures -= 1
                return httpx2.Response(self.ping_status, json={"code": "UNAVAILABLE", "message": "starting"})
            return httpx2.Response(200)
        return httpx2.Response(404, json={"code": "NOT_FOUND", "message": route})


async def create(twin: Recorder, ready_timeout: float = 5.0) -> Any:
    cls = AsyncSandbox if twin.is_async else Sandbox
    sandbox = await twin.call(
        cls.create(
            base_url=BASE,
            api_key="k",
            ready_timeout=ready_timeout,
            max_retries=0,
            http_client=twin.http_client(),
        )
    )
    return sandbox


async def test_create_waits_for_running_then_for_execd(twin: Recorder) -> None:
    server = Server(["Pending", "Pending", "Running"], ping_failures=2)
    twin.respond_with(server)
    sandbox = await create(twin)
    routes = [f"{r.method} {r.url.path}" for r in twin.requests]
    assert routes == [
        "POST /v1/sandboxes",
        *["GET /v1/sandboxes/sb1"] * 3,
        "GET /v1/sandboxes/sb1/endpoints/44772",
        *["GET /ping"] * 3,
    ]
    assert twin.requests[0].headers["OPEN-SANDBOX-API-KEY"] == "k"
    body = twin.requests[0].read()
    assert b'"entrypoint":["tail","-f","/dev/null"]' in body.replace(b" ", b"") and b'"timeout":600' in body
    assert sandbox.id == "sb1" and not server.deleted
    await twin.call(sandbox.close())
    assert server.deleted


async def test_a_failed_sandbox_is_reported_with_its_reason_and_deleted(twin: Recorder) -> None:
    server = Server(["Pending", "Failed"], reason="ImagePullBackOff")
    twin.respond_with(server)
    with pytest.raises(SandboxError, match=re.escape("sb1 is Failed (ImagePullBackOff: image pull failed)")):
        await create(twin)
    assert server.deleted


async def test_a_sandbox_stuck_pending_times_out_and_is_deleted(twin: Recorder) -> None:
    server = Server(["Pending"])
    twin.respond_with(server)
    with pytest.raises(SandboxError, match=re.escape("still Pending after 0.2 s; raise ready_timeout=")):
        await create(twin, ready_timeout=0.2)
    assert server.deleted


async def test_execd_that_never_answers_times_out_and_the_sandbox_is_deleted(twin: Recorder) -> None:
    server = Server(["Running"], ping_failures=None)
    twin.respond_with(server)
    with pytest.raises(SandboxError, match=re.escape("execd of sandbox sb1 did not answer within 0.2 s")):
        await create(twin, ready_timeout=0.2)
    assert server.deleted


async def test_execd_refusing_the_credentials_fails_at_once_and_the_sandbox_is_deleted(
    twin: Recorder,
) -> None:
    server = Server(["Running"], ping_failures=None, ping_status=401)
    twin.respond_with(server)
    with pytest.raises(AuthenticationError):
        await create(twin, ready_timeout=60)  # no waiting it out
    assert server.deleted
    assert sum(r.url.path == "/ping" for r in twin.requests) == 1


async def test_create_always_sends_resource_limits_the_defaults_under_the_callers(twin: Recorder) -> None:
    """The spec requires `resourceLimits` outside pool mode (the reference server answers 422 without)."""
    twin.respond_with(Server(["Running"]))
    await twin.call((await create(twin)).close())
    assert _json(twin.requests[0])["resourceLimits"] == {"cpu": "1", "memory": "2Gi"}

    cls = AsyncSandbox if twin.is_async else Sandbox
    sandbox = await twin.call(
        cls.create(base_url=BASE, api_key="k", resource_limits={"cpu": "4"}, http_client=twin.http_client())
    )
    await twin.call(sandbox.close())
    posts = [r for r in twin.requests if r.method == "POST"]
    assert _json(posts[-1])["resourceLimits"] == {"cpu": "4", "memory": "2Gi"}


def _json(request: httpx2.Request) -> Any:
    return json.loads(request.read())


def test_command_failed_error_says_what_failed_and_keeps_the_output_short() -> None:
    stderr = "".join(f"line {n}\n" for n in range(100))
    error = CommandFailedError("make test", Execution(exit_code=2, stdout="out\n", stderr=stderr))
    assert (error.command, error.exit_code, error.stdout, error.stderr) == ("make test", 2, "out\n", stderr)
    assert str(error) == "command 'make test' exited with 2:\n" + "\n".join(
        f"line {n}" for n in range(90, 100)
    )
    killed = Execution(
        exit_code=-1, error=ExecutionError(ename="CommandExecError", traceback=["signal: killed"])
    )
    assert str(CommandFailedError("sleep 9", killed)) == "command 'sleep 9' exited with -1 (signal: killed)"
    assert str(CommandFailedError("x" * 300, Execution())).endswith("...' did not complete")
