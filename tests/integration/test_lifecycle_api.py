"""The lifecycle API of `osbox serve` over real sockets: CRUD, filters, states, metadata, errors.

Every answer is validated against the official spec by the `api` client (see server_fixtures).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from osbox.models.lifecycle import CreateSandboxResponse, ListSandboxesResponse, Sandbox
from osbox.server import AsyncLocalServer, LocalServer
from tests.integration.server_fixtures import (
    API_KEY,
    assert_no_sandbox_processes,
    lifecycle_client,
    requires_runtime,
    sandbox_process_ids,
)

pytestmark = requires_runtime

BASE: dict[str, Any] = {"image": {"uri": "x"}, "entrypoint": ["true"]}


def _error(response: httpx2.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message"} and body["message"], body
    if code is not None:
        assert body["code"] == code
    return body


def test_health_request_ids_and_unknown_routes(lifecycle_server: LocalServer) -> None:
    with httpx2.Client(base_url=lifecycle_server.base_url) as client:
        response = client.get("/health")
        assert response.status_code == 200 and response.json() == {"status": "healthy"}
        assert uuid.UUID(response.headers["X-Request-ID"])
        assert (
            client.get("/v1/health", headers={"X-Request-ID": "req-42"}).headers["X-Request-ID"] == "req-42"
        )
        missing = client.get("/v1/no-such-route", headers={"OPEN-SANDBOX-API-KEY": API_KEY})
        _error(missing, 404)
        assert missing.headers["X-Request-ID"]
        wrong_method = client.put("/v1/sandboxes", headers={"OPEN-SANDBOX-API-KEY": API_KEY})
        _error(wrong_method, 405)


def test_api_key_is_required_on_both_prefixes(lifecycle_server: LocalServer) -> None:
    with httpx2.Client(base_url=lifecycle_server.base_url) as client:
        for prefix in ("/v1", ""):
            missing = client.get(f"{prefix}/sandboxes", headers={"X-Request-ID": "r1"})
            _error(missing, 401, "MISSING_API_KEY")
            assert missing.headers["X-Request-ID"] == "r1"
            _error(
                client.get(f"{prefix}/sandboxes", headers={"OPEN-SANDBOX-API-KEY": "nope"}),
                401,
                "INVALID_API_KEY",
            )
            ok = client.get(f"{prefix}/sandboxes", headers={"OPEN-SANDBOX-API-KEY": API_KEY})
            assert ok.status_code == 200


def test_create_get_delete(api: httpx2.Client, make_sandbox: Any) -> None:
    created = make_sandbox(metadata={"team": "core"}, timeout=3600, env={"FOO": "bar"})
    CreateSandboxResponse.model_validate(created)
    assert "image" not in created and created["expiresAt"]
    assert "Image docker.io/library/python:3.11 (sha256:" in created["status"]["message"]
    got = api.get(f"/sandboxes/{created['id']}")
    assert got.status_code == 200
    sandbox = Sandbox.model_validate(got.json())
    assert got.json()["image"] == {"uri": "python:3.11"}
    assert sandbox.entrypoint == ["tail", "-f", "/dev/null"] and sandbox.metadata == {"team": "core"}
    assert api.delete(f"/sandboxes/{created['id']}").status_code == 204
    _error(api.get(f"/sandboxes/{created['id']}"), 404, "SANDBOX::SANDBOX_NOT_FOUND")
    _error(api.delete(f"/sandboxes/{created['id']}"), 404, "SANDBOX::SANDBOX_NOT_FOUND")


def test_manual_cleanup_sandbox_has_no_expiry(api: httpx2.Client, make_sandbox: Any) -> None:
    created = make_sandbox()
    assert "expiresAt" not in created
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _error(api.post(f"/sandboxes/{created['id']}/renew-expiration", json={"expiresAt": future}), 409)


def test_list_filters_and_pagination(api: httpx2.Client, make_sandbox: Any) -> None:
    suite = f"list-{uuid.uuid4().hex[:8]}"
    ids = [make_sandbox(metadata={"suite": suite, "n": str(i)})["id"] for i in range(3)]
    api.post(f"/sandboxes/{ids[0]}/pause")

    def listing(**params: Any) -> dict[str, Any]:
        response = api.get("/sandboxes", params=params)
        assert response.status_code == 200, response.text
        ListSandboxesResponse.model_validate(response.json())
        body: dict[str, Any] = response.json()
        return body

    everything = listing(metadata=f"suite={suite}")
    assert [s["id"] for s in everything["items"]] == ids[::-1]  # newest first
    assert listing(metadata=urlencode({"suite": suite, "n": "1"}))["pagination"]["totalItems"] == 1
    running = listing(metadata=f"suite={suite}", state="Running")
    assert {s["id"] for s in running["items"]} == set(ids[1:])
    either = api.get(
        "/sandboxes", params=[("metadata", f"suite={suite}"), ("state", "Running"), ("state", "Paused")]
    )
    assert either.json()["pagination"]["totalItems"] == 3
    first = listing(metadata=f"suite={suite}", pageSize=2)
    assert len(first["items"]) == 2
    assert first["pagination"] == {
        "page": 1,
        "pageSize": 2,
        "totalItems": 3,
        "totalPages": 2,
        "hasNextPage": True,
    }
    second = listing(metadata=f"suite={suite}", pageSize=2, page=2)
    assert [s["id"] for s in second["items"]] == [ids[0]] and second["pagination"]["hasNextPage"] is False


@pytest.mark.parametrize(
    ("params", "hint"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 201}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
    ],
)
def test_list_rejects_bad_paging(api: httpx2.Client, params: dict[str, Any], hint: str) -> None:
    assert hint in _error(api.get("/sandboxes", params=params), 400)["message"]


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        ({"entrypoint": ["true"]}, "exactly one of"),
        ({"image": {"uri": "x"}, "snapshotId": "s", "entrypoint": ["true"]}, "exactly one of"),
        ({"image": {"uri": "Not A Reference!"}, "entrypoint": ["true"]}, "image.uri"),
        ({"image": {"uri": "x"}, "entrypoint": []}, "entrypoint"),
        ({"image": {"uri": ""}, "entrypoint": ["true"]}, "image.uri"),
        ({**BASE, "timeout": 0}, "timeout"),
        ({**BASE, "timeout": "60"}, "timeout"),
        ({**BASE, "resourceLimits": {"cpu": "lots"}}, "cpu"),
        ({**BASE, "resourceLimits": {"memory": "1Zb"}}, "memory"),
        ({**BASE, "resourceLimits": {"gpu": "1"}}, "no GPU support"),
        ({**BASE, "metadata": {"opensandbox.io/x": "y"}}, "reserved"),
        ({**BASE, "metadata": {"name": "has spaces"}}, "label value"),
        ({**BASE, "metadata": {"bad key": "v"}}, "label name"),
        ({**BASE, "env": {"A": 1}}, "env.A"),
        ({**BASE, "platform": {"os": "windows", "arch": "amd64"}}, "Linux"),
        (
            {**BASE, "volumes": [{"name": "v", "mountPath": "/d", "host": {"path": "/definitely/not/here"}}]},
            "does not exist",
        ),
        (
            {**BASE, "volumes": [{"name": "v", "mountPath": "/d", "host": {"path": "relative"}}]},
            "absolute",
        ),
        (
            {**BASE, "volumes": [{"name": "v", "mountPath": "/d", "ossfs": {"bucket": "b"}}]},
            "ossfs",
        ),
        (
            {
                **BASE,
                "volumes": [{"name": "v", "mountPath": "/d", "pvc": {"claimName": "c"}, "subPath": "../x"}],
            },
            "subPath",
        ),
        (
            {**BASE, "extensions": {"access.renew.extend.seconds": "5"}},
            "300",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_create_validation_is_400_with_a_clear_message(api: httpx2.Client, body: Any, hint: str) -> None:
    error = _error(api.post("/sandboxes", json=body), 400, "SANDBOX::INVALID_PARAMETER")
    assert hint in error["message"]


def test_malformed_json_is_400(api: httpx2.Client) -> None:
    response = api.post("/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"})
    assert "JSON" in _error(response, 400)["message"]


def test_oversized_body_is_400_and_not_buffered(api: httpx2.Client) -> None:
    huge = b'{"metadata": {"k": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    response = api.post("/sandboxes", content=huge, headers={"Content-Type": "application/json"})
    assert "larger than" in _error(response, 400)["message"]
    assert api.get("/sandboxes").status_code == 200


def test_pause_resume_states(api: httpx2.Client, make_sandbox: Any) -> None:
    sandbox_id = make_sandbox()["id"]
    _error(api.post(f"/sandboxes/{sandbox_id}/resume"), 409, "SANDBOX::SANDBOX_NOT_PAUSED")
    assert api.post(f"/sandboxes/{sandbox_id}/pause").status_code == 202
    assert api.get(f"/sandboxes/{sandbox_id}").json()["status"]["state"] == "Paused"
    _error(api.post(f"/sandboxes/{sandbox_id}/pause"), 409, "SANDBOX::SANDBOX_NOT_RUNNING")
    assert (
        api.get(f"/sandboxes/{sandbox_id}/endpoints/8000").status_code == 200
    )  # connections wait for resume
    assert api.post(f"/sandboxes/{sandbox_id}/resume").status_code == 202
    assert api.get(f"/sandboxes/{sandbox_id}").json()["status"]["state"] == "Running"
    _error(api.post("/sandboxes/unknown/pause"), 404, "SANDBOX::SANDBOX_NOT_FOUND")


def test_renew_expiration(api: httpx2.Client, make_sandbox: Any) -> None:
    sandbox_id = make_sandbox(timeout=3600)["id"]
    target = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    response = api.post(f"/sandboxes/{sandbox_id}/renew-expiration", json={"expiresAt": target.isoformat()})
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["expiresAt"]) == target
    assert api.get(f"/sandboxes/{sandbox_id}").json()["expiresAt"] == response.json()["expiresAt"]
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    beyond = (datetime.now(UTC) + timedelta(days=365 * 101)).isoformat()  # past the longest timeout
    for body in ({"expiresAt": past}, {"expiresAt": beyond}, {"expiresAt": "tomorrow"}, {}):
        _error(
            api.post(f"/sandboxes/{sandbox_id}/renew-expiration", json=body),
            400,
            "SANDBOX::INVALID_EXPIRATION",
        )


def test_patch_metadata_merge(api: httpx2.Client, make_sandbox: Any) -> None:
    sandbox_id = make_sandbox(metadata={"keep": "1", "drop": "2", "change": "3"})["id"]
    response = api.patch(
        f"/sandboxes/{sandbox_id}/metadata", json={"drop": None, "change": "4", "new": "5", "gone": None}
    )
    assert response.status_code == 200, response.text
    assert Sandbox.model_validate(response.json()).metadata == {"keep": "1", "change": "4", "new": "5"}
    assert api.patch(f"/sandboxes/{sandbox_id}/metadata", json={}).json()["metadata"]["keep"] == "1"
    _error(api.patch(f"/sandboxes/{sandbox_id}/metadata", json={"opensandbox.io/owner": "x"}), 400)
    _error(api.patch(f"/sandboxes/{sandbox_id}/metadata", json={"k": 1}), 400)
    _error(api.patch("/sandboxes/unknown/metadata", json={"k": "v"}), 404)


def test_endpoints(api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer) -> None:
    sandbox_id = make_sandbox()["id"]
    host = lifecycle_server.base_url.removeprefix("http://")
    execd = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()
    assert execd["endpoint"] == f"{host}/sandboxes/{sandbox_id}/proxy/44772"
    assert len(execd["headers"]["X-EXECD-ACCESS-TOKEN"]) >= 32
    egress = api.get(f"/sandboxes/{sandbox_id}/endpoints/18080", params={"use_server_proxy": "true"}).json()
    assert egress["endpoint"] == f"{host}/sandboxes/{sandbox_id}/proxy/18080"
    assert egress["headers"]["OPENSANDBOX-EGRESS-AUTH"]
    proxied = api.get(f"/sandboxes/{sandbox_id}/endpoints/8000", params={"use_server_proxy": "true"}).json()
    assert proxied == {"endpoint": f"{host}/sandboxes/{sandbox_id}/proxy/8000"}
    forwarded = api.get(
        f"/sandboxes/{sandbox_id}/endpoints/44772", headers={"Host": "gateway.test:9000"}
    ).json()
    assert forwarded["endpoint"].startswith("gateway.test:9000/sandboxes/")
    _error(
        api.get(
            f"/sandboxes/{sandbox_id}/endpoints/8000", params={"use_server_proxy": "true", "expires": "9"}
        ),
        400,
    )
    _error(api.get(f"/sandboxes/{sandbox_id}/endpoints/70000"), 400)
    _error(api.get("/sandboxes/unknown/endpoints/44772"), 404)


def test_diagnostics(api: httpx2.Client, make_sandbox: Any) -> None:
    from tests.polling import wait_until

    sandbox_id = make_sandbox(["sh", "-c", "echo hello-from-entrypoint; exec tail -f /dev/null"])["id"]

    def logs() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(
            f"/sandboxes/{sandbox_id}/diagnostics/logs", params={"scope": "container"}
        ).json()
        return body if "hello-from-entrypoint" in body["content"] else None

    descriptor = wait_until(logs, what="the entrypoint's output in the logs")
    assert (
        descriptor["kind"] == "logs"
        and descriptor["delivery"] == "inline"
        and descriptor["truncated"] is False
    )
    api.post(f"/sandboxes/{sandbox_id}/pause")
    events = api.get(f"/sandboxes/{sandbox_id}/diagnostics/events", params={"scope": "lifecycle"}).json()
    lines = events["content"].splitlines()
    assert [line.split()[1] for line in lines] == ["Pending", "Running", "Paused"]
    _error(api.get(f"/sandboxes/{sandbox_id}/diagnostics/logs"), 400)
    _error(api.get(f"/sandboxes/{sandbox_id}/diagnostics/events", params={"scope": "galaxy"}), 400)
    _error(api.get("/sandboxes/unknown/diagnostics/logs", params={"scope": "all"}), 404)


def test_volumes_host_read_only_and_named(
    api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer, reachable_dir: Path
) -> None:
    from tests.polling import wait_until

    shared = reachable_dir
    (shared / "in.txt").write_text("from-the-host\n")
    script = (
        "cat /data/in.txt; (echo x > /data/out.txt) 2>/dev/null || echo read-only-ok; "
        "echo named > /vol/file.txt; echo done; exec tail -f /dev/null"
    )
    sandbox_id = make_sandbox(
        ["sh", "-c", script],
        volumes=[
            {"name": "data", "mountPath": "/data", "readOnly": True, "host": {"path": str(shared)}},
            {"name": "named", "mountPath": "/vol", "pvc": {"claimName": "test-claim"}},
        ],
    )["id"]

    def output() -> str | None:
        text: str = api.get(f"/sandboxes/{sandbox_id}/diagnostics/logs", params={"scope": "all"}).json()[
            "content"
        ]
        return text if "done" in text else None

    text = wait_until(output, what="the volume script to finish")
    assert "from-the-host" in text and "read-only-ok" in text
    assert not (shared / "out.txt").exists()
    assert (lifecycle_server.data_dir / "volumes" / "test-claim" / "file.txt").read_text() == "named\n"


def test_execd_through_the_proxy(
    api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer
) -> None:
    sandbox_id = make_sandbox()["id"]
    token = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()["headers"]["X-EXECD-ACCESS-TOKEN"]
    with httpx2.Client(base_url=f"{lifecycle_server.base_url}/sandboxes/{sandbox_id}/proxy/44772") as execd:
        assert execd.get("/ping").status_code == 401
        assert execd.get("/ping", headers={"X-EXECD-ACCESS-TOKEN": "wrong"}).status_code == 401
        assert execd.get("/ping", headers={"X-EXECD-ACCESS-TOKEN": token}).status_code == 200


def test_second_server_without_api_key_is_open(reachable_dir: Path) -> None:
    with (
        LocalServer(data_dir=reachable_dir / "data") as server,
        lifecycle_client(server, api_key=None) as client,
    ):
        assert server.api_key is None
        assert client.get("/sandboxes").json()["items"] == []


def test_local_server_reports_why_it_could_not_start(tmp_path: Path) -> None:
    # pytest's tmp_path is under a root-only directory: the backend refuses it, and says so.
    with pytest.raises(RuntimeError, match=r"failed to start: .*not reachable"):
        LocalServer(data_dir=tmp_path / "data").start()


async def test_async_local_server_runs_on_the_callers_loop(reachable_dir: Path) -> None:
    body = {"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"]}
    before = sandbox_process_ids()  # the module server's warm pool
    server = AsyncLocalServer(data_dir=reachable_dir / "data")
    async with server, httpx2.AsyncClient(base_url=server.base_url + "/v1", timeout=60) as client:
        created = await client.post("/sandboxes", json=body)
        assert created.status_code == 202 and created.json()["status"]["state"] == "Running"
        assert (await client.get(f"/sandboxes/{created.json()['id']}")).status_code == 200
    assert_no_sandbox_processes(ignore=before)  # destroyed on exit
    assert not (reachable_dir / "data" / "sandboxes" / created.json()["id"]).exists()


def test_diagnostic_logs_keep_the_newest_output(reachable_dir: Path) -> None:
    from tests.polling import wait_until

    script = "for i in $(seq 1 200); do echo line-$i; done; exec tail -f /dev/null"
    body = {"image": {"uri": "python:3.11"}, "entrypoint": ["sh", "-c", script]}
    with (
        LocalServer(data_dir=reachable_dir / "data", diagnostics_max_bytes=100) as server,
        lifecycle_client(server, api_key=None) as client,
    ):
        sandbox_id = client.post("/sandboxes", json=body).json()["id"]

        def tail() -> dict[str, Any] | None:
            logs: dict[str, Any] = client.get(
                f"/sandboxes/{sandbox_id}/diagnostics/logs", params={"scope": "container"}
            ).json()
            return logs if logs["content"].endswith("line-200\n") else None

        logs = wait_until(tail, what="the last line in the logs")
        assert logs["truncated"] is True and len(logs["content"]) <= 100
        assert logs["content"].startswith("line-")  # cut at a line start
