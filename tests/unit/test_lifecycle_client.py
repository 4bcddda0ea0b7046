"""LifecycleClient and AsyncLifecycleClient over a mock transport: every operation on both twins.

Each captured request is validated against `sandbox-lifecycle.yml` / `diagnostic-api.yml`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pydantic
import pytest

import osbox
from osbox import AsyncLifecycleClient, LifecycleClient
from osbox.models import CreateSandboxRequest, ImageAuth, ImageSpec, SandboxState
from tests.spec_check import SpecCheck

from .conftest import BASE_URL, Recorder

API_KEY = "sk-lifecycle-secret-0123456789"

SANDBOX = {
    "id": "sbx-1",
    "status": {"state": "Running", "lastTransitionAt": "2026-01-01T00:00:01Z"},
    "metadata": {"env": "prod"},
    "entrypoint": ["sleep", "infinity"],
    "expiresAt": "2026-01-01T01:00:00Z",
    "createdAt": "2026-01-01T00:00:00Z",
    "image": {"uri": "python:3.11"},
}
SNAPSHOT = {
    "id": "snap-1",
    "sandboxId": "sbx-1",
    "name": "before",
    "status": {"state": "Creating"},
    "createdAt": "2026-01-01T00:00:00Z",
}
DIAGNOSTIC = {
    "sandboxId": "sbx-1",
    "kind": "logs",
    "scope": "container",
    "delivery": "inline",
    "contentType": "text/plain; charset=utf-8",
    "content": "ready\n",
    "truncated": False,
}


def page_of(items: list[dict[str, Any]], page: int, has_next: bool, total: int = 3) -> dict[str, Any]:
    return {
        "items": items,
        "pagination": {
            "page": page,
            "pageSize": 2,
            "totalItems": total,
            "totalPages": 2,
            "hasNextPage": has_next,
        },
    }


def client_for(twin: Recorder, **options: Any) -> Any:
    options.setdefault("max_retries", 0)
    return twin.client(LifecycleClient, AsyncLifecycleClient, BASE_URL, API_KEY, **options)


def check(request: httpx2.Request, api: str = "lifecycle") -> None:
    SpecCheck.load().request(api, request, base_url=BASE_URL)


def body(request: httpx2.Request) -> Any:
    return json.loads(request.content)


# -- construction and headers ---------------------------------------------------------------------


async def test_requests_carry_the_api_key_and_json_accept(twin: Recorder) -> None:
    twin.reply(json=SANDBOX)
    client = client_for(twin)
    await twin.call(client.get_sandbox("sbx-1"))
    headers = twin.last.headers
    assert headers["OPEN-SANDBOX-API-KEY"] == API_KEY
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("osbox-python/")


async def test_api_key_and_domain_come_from_the_environment(
    twin: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPEN_SANDBOX_API_KEY", "from-env")
    monkeypatch.setenv("OPEN_SANDBOX_DOMAIN", "sandbox.example:9000")
    client = twin.client(LifecycleClient, AsyncLifecycleClient)
    assert client.base_url == "http://sandbox.example:9000/v1"
    twin.reply(json=SANDBOX)
    await twin.call(client.get_sandbox("x"))
    assert str(twin.last.url) == "http://sandbox.example:9000/v1/sandboxes/x"
    assert twin.last.headers["OPEN-SANDBOX-API-KEY"] == "from-env"


def test_domain_with_a_scheme_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPEN_SANDBOX_DOMAIN", "https://sandboxes.example/api/v1")
    with LifecycleClient() as client:
        assert client.base_url == "https://sandboxes.example/api/v1"


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPEN_SANDBOX_DOMAIN", raising=False)
    monkeypatch.delenv("OPEN_SANDBOX_API_KEY", raising=False)
    with LifecycleClient() as client:
        assert client.base_url == "http://localhost:8080/v1"
        assert "OPEN-SANDBOX-API-KEY" not in client._headers


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPEN_SANDBOX_DOMAIN", "env.example:1")
    monkeypatch.setenv("OPEN_SANDBOX_API_KEY", "env-key")
    with LifecycleClient("http://given.example/v1", "given-key") as client:
        assert client.base_url == "http://given.example/v1"
        assert client._headers["OPEN-SANDBOX-API-KEY"] == "given-key"


# -- create ---------------------------------------------------------------------------------------


async def test_create_sends_every_field_in_wire_form(twin: Recorder) -> None:
    twin.reply(202, json={k: v for k, v in SANDBOX.items() if k != "image"})
    client = client_for(twin)
    created = await twin.call(
        client.create_sandbox(
            image=ImageSpec(uri="registry.example/py:3.11", auth=ImageAuth(username="u", password="p")),
            entrypoint=["python", "-m", "http.server"],
            timeout=600,
            resource_limits={"cpu": "500m", "memory": "512Mi"},
            env={"TOKEN": "t"},
            metadata={"env": "prod"},
            network_policy={"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]},
            volumes=[{"name": "data", "host": {"path": "/srv/data"}, "mountPath": "/data"}],
            extensions={"x": "y"},
            platform={"os": "linux", "arch": "amd64"},
            secure_access=True,
            credential_proxy={"enabled": True},
        )
    )
    assert created.id == "sbx-1"
    assert created.status.state is SandboxState.RUNNING
    req = twin.last
    assert (req.method, req.url.path) == ("POST", "/v1/sandboxes")
    assert req.headers["Content-Type"] == "application/json"
    assert body(req) == {
        "image": {"uri": "registry.example/py:3.11", "auth": {"username": "u", "password": "p"}},
        "entrypoint": ["python", "-m", "http.server"],
        "timeout": 600,
        "resourceLimits": {"cpu": "500m", "memory": "512Mi"},
        "env": {"TOKEN": "t"},
        "metadata": {"env": "prod"},
        "networkPolicy": {"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]},
        "volumes": [{"name": "data", "host": {"path": "/srv/data"}, "mountPath": "/data"}],
        "extensions": {"x": "y"},
        "platform": {"os": "linux", "arch": "amd64"},
        "secureAccess": True,
        "credentialProxy": {"enabled": True},
    }
    check(req)


async def test_create_omits_unset_fields_and_timeout_for_manual_cleanup(twin: Recorder) -> None:
    twin.reply(202, json=SANDBOX)
    client = client_for(twin)
    await twin.call(client.create_sandbox(image="python:3.11", entrypoint=["sleep", "infinity"]))
    assert body(twin.last) == {"image": {"uri": "python:3.11"}, "entrypoint": ["sleep", "infinity"]}
    check(twin.last)


async def test_create_with_timeout_none_sends_null(twin: Recorder) -> None:
    twin.reply(202, json=SANDBOX)
    client = client_for(twin)
    await twin.call(client.create_sandbox(image="python:3.11", entrypoint=["sleep"], timeout=None))
    assert body(twin.last) == {"image": {"uri": "python:3.11"}, "entrypoint": ["sleep"], "timeout": None}
    check(twin.last)


async def test_snapshot_restore_sends_only_the_snapshot_id(twin: Recorder) -> None:
    twin.reply(202, json=SANDBOX)
    client = client_for(twin)
    await twin.call(client.create_sandbox(snapshot_id="snap-1", timeout=3600))
    assert body(twin.last) == {"snapshotId": "snap-1", "timeout": 3600}
    check(twin.last)


async def test_create_accepts_a_ready_request(twin: Recorder) -> None:
    twin.reply(202, json=SANDBOX)
    client = client_for(twin)
    request = CreateSandboxRequest(image=ImageSpec(uri="alpine"), entrypoint=["sh"], timeout=None)
    await twin.call(client.create_sandbox(request))
    assert body(twin.last) == {"image": {"uri": "alpine"}, "entrypoint": ["sh"], "timeout": None}
    check(twin.last)


async def test_create_rejects_bad_input_before_sending(twin: Recorder) -> None:
    client = client_for(twin)
    with pytest.raises(pydantic.ValidationError, match="entrypoint is required"):
        await twin.call(client.create_sandbox(image="python:3.11"))
    with pytest.raises(pydantic.ValidationError, match="either image or snapshotId"):
        await twin.call(client.create_sandbox(image="python", entrypoint=["sh"], snapshot_id="s"))
    with pytest.raises(pydantic.ValidationError, match="timeout"):
        await twin.call(client.create_sandbox(image="python", entrypoint=["sh"], timeout=5))
    request = CreateSandboxRequest(snapshot_id="s")
    with pytest.raises(TypeError, match="not both"):
        await twin.call(client.create_sandbox(request, timeout=None))
    assert twin.requests == []


async def test_create_validation_error_does_not_echo_env_secrets(twin: Recorder) -> None:
    client = client_for(twin)
    with pytest.raises(pydantic.ValidationError) as caught:
        await twin.call(client.create_sandbox(image="python", entrypoint=["sh"], env={"K": 42}))
    assert "42" not in str(caught.value)


# -- sandboxes ------------------------------------------------------------------------------------


async def test_get_sandbox_percent_encodes_the_id(twin: Recorder) -> None:
    twin.reply(json=SANDBOX)
    client = client_for(twin)
    sandbox = await twin.call(client.get_sandbox("a b/c"))
    assert twin.last.url.raw_path == b"/v1/sandboxes/a%20b%2Fc"
    assert sandbox.image.uri == "python:3.11"
    assert sandbox.expires_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    check(twin.last)


async def test_empty_path_parameter_is_rejected(twin: Recorder) -> None:
    client = client_for(twin)
    with pytest.raises(ValueError, match="non-empty"):
        await twin.call(client.get_sandbox(""))
    with pytest.raises(ValueError, match="non-empty"):
        await twin.call(client.delete_sandbox(".."))
    assert twin.requests == []


async def test_list_sandboxes_exact_query_string(twin: Recorder) -> None:
    twin.reply(json=page_of([SANDBOX], 1, False, total=1))
    client = client_for(twin)
    page = await twin.call(
        client.list_sandboxes(state=["Running", "Paused"], metadata={"env": "prod"}, page=1, page_size=10)
    )
    assert twin.last.url.query == b"state=Running&state=Paused&metadata=env%3Dprod&page=1&pageSize=10"
    assert [s.id for s in page.items] == ["sbx-1"]
    assert page.pagination.has_next_page is False
    check(twin.last)


async def test_list_sandboxes_metadata_filter_is_encoded_twice(twin: Recorder) -> None:
    twin.reply(json=page_of([], 1, False, total=0))
    client = client_for(twin)
    metadata = {"project": "Apollo", "note": "a&b=c d"}
    await twin.call(client.list_sandboxes(state=SandboxState.RUNNING, metadata=metadata))
    query = twin.last.url.query.decode()
    assert query == "state=Running&metadata=project%3DApollo%26note%3Da%2526b%253Dc%2520d"
    # The server's view: decode the query, then parse the filter as a query string of its own.
    (_name, value), *_ = [p for p in parse_qsl(query) if p[0] == "metadata"]
    assert dict(parse_qsl(value)) == metadata
    check(twin.last)


async def test_list_sandboxes_without_filters_sends_no_query(twin: Recorder) -> None:
    twin.reply(json=page_of([], 1, False, total=0))
    client = client_for(twin)
    await twin.call(client.list_sandboxes())
    assert twin.last.url.query == b""
    check(twin.last)


async def test_iter_sandboxes_follows_pages(twin: Recorder) -> None:
    second = dict(SANDBOX, id="sbx-2")
    third = dict(SANDBOX, id="sbx-3")
    twin.reply(json=page_of([SANDBOX, second], 1, True))
    twin.reply(json=page_of([third], 2, False))
    client = client_for(twin)
    ids = [s.id for s in await twin.collect(client.iter_sandboxes(state="Running", page_size=2))]
    assert ids == ["sbx-1", "sbx-2", "sbx-3"]
    assert [r.url.query for r in twin.requests] == [
        b"state=Running&page=1&pageSize=2",
        b"state=Running&page=2&pageSize=2",
    ]
    for request in twin.requests:
        check(request)


async def test_iter_stops_on_an_empty_page_that_claims_more(twin: Recorder) -> None:
    twin.reply(json=page_of([], 1, True))
    client = client_for(twin)
    assert await twin.collect(client.iter_sandboxes()) == []
    assert len(twin.requests) == 1


async def test_delete_sandbox_answers_204(twin: Recorder) -> None:
    twin.reply(204)
    client = client_for(twin)
    assert await twin.call(client.delete_sandbox("sbx-1")) is None
    assert (twin.last.method, twin.last.url.path) == ("DELETE", "/v1/sandboxes/sbx-1")
    check(twin.last)


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_pause_and_resume_post(twin: Recorder, action: str) -> None:
    twin.reply(202)
    client = client_for(twin)
    assert await twin.call(getattr(client, f"{action}_sandbox")("sbx-1")) is None
    assert (twin.last.method, twin.last.url.path) == ("POST", f"/v1/sandboxes/sbx-1/{action}")
    assert twin.last.content == b""
    check(twin.last)


async def test_renew_expiration_with_a_datetime(twin: Recorder) -> None:
    twin.reply(json={"expiresAt": "2030-01-01T00:00:00Z"})
    client = client_for(twin)
    when = datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=1)))  # 01:00 UTC
    answer = await twin.call(client.renew_expiration("sbx-1", when))
    assert (twin.last.method, twin.last.url.path) == ("POST", "/v1/sandboxes/sbx-1/renew-expiration")
    assert body(twin.last) == {"expiresAt": "2030-01-01T01:00:00Z"}
    assert answer.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    check(twin.last)


async def test_renew_expiration_with_a_timedelta(twin: Recorder) -> None:
    twin.reply(json={"expiresAt": "2030-01-01T00:00:00Z"})
    client = client_for(twin)
    before = datetime.now(UTC)
    await twin.call(client.renew_expiration("sbx-1", timedelta(minutes=30)))
    sent = datetime.fromisoformat(body(twin.last)["expiresAt"])
    assert before + timedelta(minutes=29) < sent < datetime.now(UTC) + timedelta(minutes=31)
    check(twin.last)


async def test_patch_metadata_sends_null_to_delete(twin: Recorder) -> None:
    twin.reply(json=SANDBOX)
    client = client_for(twin)
    sandbox = await twin.call(client.patch_metadata("sbx-1", {"team": "infra", "obsolete": None}))
    assert (twin.last.method, twin.last.url.path) == ("PATCH", "/v1/sandboxes/sbx-1/metadata")
    assert twin.last.content == b'{"team":"infra","obsolete":null}'
    assert sandbox.id == "sbx-1"
    check(twin.last)


# -- endpoints ------------------------------------------------------------------------------------

ENDPOINT = {"endpoint": "127.0.0.1:9000/proxy/44772", "headers": {"X-EXECD-ACCESS-TOKEN": "tok"}}


async def test_get_endpoint_plain(twin: Recorder) -> None:
    twin.reply(json=ENDPOINT)
    client = client_for(twin)
    endpoint = await twin.call(client.get_endpoint("sbx-1", 44772))
    assert twin.last.url.path == "/v1/sandboxes/sbx-1/endpoints/44772"
    assert twin.last.url.query == b""
    assert endpoint.endpoint == "127.0.0.1:9000/proxy/44772"
    assert endpoint.headers == {"X-EXECD-ACCESS-TOKEN": "tok"}
    assert "tok" not in repr(endpoint)
    check(twin.last)


async def test_get_endpoint_through_the_server_proxy(twin: Recorder) -> None:
    twin.reply(json=ENDPOINT)
    client = client_for(twin)
    await twin.call(client.get_endpoint("sbx-1", 8080, use_server_proxy=True))
    assert twin.last.url.query == b"use_server_proxy=true"
    check(twin.last)


async def test_get_endpoint_with_expires(twin: Recorder) -> None:
    twin.reply(json=ENDPOINT)
    twin.reply(json=ENDPOINT)
    client = client_for(twin)
    await twin.call(client.get_endpoint("sbx-1", 8080, expires=datetime(2030, 1, 1, tzinfo=UTC)))
    assert twin.last.url.query == b"expires=1893456000"
    check(twin.last)
    await twin.call(client.get_endpoint("sbx-1", 8080, expires=1893456000))
    assert twin.last.url.query == b"expires=1893456000"


async def test_get_signed_endpoint(twin: Recorder) -> None:
    twin.reply(json=ENDPOINT)
    client = client_for(twin)
    before = int(datetime.now(UTC).timestamp())
    await twin.call(client.get_signed_endpoint("sbx-1", 8080, timedelta(hours=1)))
    ((name, value),) = parse_qsl(twin.last.url.query.decode())
    assert name == "expires"
    assert before + 3600 <= int(value) <= before + 3602
    check(twin.last)


async def test_get_endpoint_rejects_bad_arguments(twin: Recorder) -> None:
    client = client_for(twin)
    with pytest.raises(ValueError, match="cannot be combined"):
        await twin.call(client.get_endpoint("sbx-1", 80, use_server_proxy=True, expires=10))
    with pytest.raises(ValueError, match="port"):
        await twin.call(client.get_endpoint("sbx-1", 0))
    with pytest.raises(ValueError, match="expires"):
        await twin.call(client.get_signed_endpoint("sbx-1", 80, -5))
    assert twin.requests == []


# -- snapshots ------------------------------------------------------------------------------------


async def test_create_snapshot_named_and_unnamed(twin: Recorder) -> None:
    twin.reply(202, json=SNAPSHOT)
    twin.reply(202, json=dict(SNAPSHOT, name=None))
    client = client_for(twin)
    snapshot = await twin.call(client.create_snapshot("sbx-1", name="before"))
    assert (twin.last.method, twin.last.url.path) == ("POST", "/v1/sandboxes/sbx-1/snapshots")
    assert body(twin.last) == {"name": "before"}
    assert snapshot.status.state == "Creating"
    check(twin.last)
    await twin.call(client.create_snapshot("sbx-1"))
    assert body(twin.last) == {}
    check(twin.last)


async def test_get_and_delete_snapshot(twin: Recorder) -> None:
    twin.reply(json=dict(SNAPSHOT, status={"state": "Ready"}))
    twin.reply(204)
    client = client_for(twin)
    snapshot = await twin.call(client.get_snapshot("snap-1"))
    assert snapshot.sandbox_id == "sbx-1"
    assert (twin.last.method, twin.last.url.path) == ("GET", "/v1/snapshots/snap-1")
    check(twin.last)
    assert await twin.call(client.delete_snapshot("snap-1")) is None
    assert (twin.last.method, twin.last.url.path) == ("DELETE", "/v1/snapshots/snap-1")
    check(twin.last)


async def test_list_snapshots_query(twin: Recorder) -> None:
    twin.reply(json=page_of([SNAPSHOT], 1, False, total=1))
    client = client_for(twin)
    page = await twin.call(
        client.list_snapshots(sandbox_id="sbx-1", state=["Ready", "Failed"], page=2, page_size=5)
    )
    assert twin.last.url.query == b"sandboxId=sbx-1&state=Ready&state=Failed&page=2&pageSize=5"
    assert page.items[0].id == "snap-1"
    check(twin.last)


async def test_iter_snapshots_follows_pages(twin: Recorder) -> None:
    twin.reply(json=page_of([SNAPSHOT], 1, True))
    twin.reply(json=page_of([dict(SNAPSHOT, id="snap-2")], 2, False))
    client = client_for(twin)
    ids = [s.id for s in await twin.collect(client.iter_snapshots(sandbox_id="sbx-1"))]
    assert ids == ["snap-1", "snap-2"]
    assert twin.requests[1].url.query == b"sandboxId=sbx-1&page=2"
    for request in twin.requests:
        check(request)


# -- diagnostics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["logs", "events"])
async def test_diagnostics(twin: Recorder, kind: str) -> None:
    twin.reply(json=dict(DIAGNOSTIC, kind=kind))
    client = client_for(twin)
    descriptor = await twin.call(getattr(client, f"get_diagnostic_{kind}")("sbx-1", scope="container"))
    assert twin.last.url.path == f"/v1/sandboxes/sbx-1/diagnostics/{kind}"
    assert twin.last.url.query == b"scope=container"
    assert descriptor.content == "ready\n"
    check(twin.last, "diagnostic")


async def test_diagnostics_default_scope_is_all(twin: Recorder) -> None:
    twin.reply(json=DIAGNOSTIC)
    client = client_for(twin)
    await twin.call(client.get_diagnostic_logs("sbx-1"))
    assert twin.last.url.query == b"scope=all"
    check(twin.last, "diagnostic")


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, osbox.BadRequestError),
        (401, osbox.AuthenticationError),
        (403, osbox.PermissionDeniedError),
        (404, osbox.NotFoundError),
        (409, osbox.ConflictError),
        (422, osbox.UnprocessableEntityError),
        (429, osbox.RateLimitError),
        (500, osbox.InternalServerError),
        (501, osbox.InternalServerError),
        (503, osbox.InternalServerError),
        (418, osbox.APIStatusError),
    ],
)
async def test_status_maps_to_exception_class(
    twin: Recorder, status: int, cls: type[osbox.APIStatusError]
) -> None:
    twin.reply(
        status,
        json={"code": "SANDBOX::SOMETHING", "message": "it went wrong"},
        headers={"X-Request-ID": "req-42", "Retry-After": "7"},
    )
    client = client_for(twin)
    with pytest.raises(cls) as caught:
        await twin.call(client.get_sandbox("sbx-1"))
    error = caught.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.code == "SANDBOX::SOMETHING"
    assert error.message == "it went wrong"
    assert error.request_id == "req-42"
    assert error.retry_after == 7.0
    assert error.body == {"code": "SANDBOX::SOMETHING", "message": "it went wrong"}
    text = str(error)
    assert "SANDBOX::SOMETHING" in text
    assert "req-42" in text
    assert API_KEY not in text
    assert API_KEY not in repr(error)


async def test_non_json_error_body(twin: Recorder) -> None:
    twin.reply(502, content=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"})
    client = client_for(twin)
    with pytest.raises(osbox.InternalServerError) as caught:
        await twin.call(client.get_sandbox("sbx-1"))
    assert caught.value.code == "Bad Gateway"
    assert caught.value.message == "<html>bad gateway</html>"
    assert caught.value.request_id is None


async def test_fastapi_detail_bodies(twin: Recorder) -> None:
    twin.reply(422, json={"detail": [{"loc": ["body", "timeout"], "msg": "must be >= 60"}]})
    twin.reply(404, json={"detail": "Sandbox not found"})
    client = client_for(twin)
    with pytest.raises(osbox.UnprocessableEntityError) as unprocessable:
        await twin.call(client.create_sandbox(snapshot_id="s"))
    assert unprocessable.value.code == "Unprocessable Content"
    assert unprocessable.value.message == "body.timeout: must be >= 60"
    with pytest.raises(osbox.NotFoundError) as missing:
        await twin.call(client.get_sandbox("gone"))
    assert missing.value.message == "Sandbox not found"


async def test_error_message_without_message_field(twin: Recorder) -> None:
    twin.reply(409, json={"code": "SANDBOX::SANDBOX_NOT_RUNNING"})
    client = client_for(twin)
    with pytest.raises(osbox.ConflictError) as caught:
        await twin.call(client.pause_sandbox("sbx-1"))
    assert caught.value.code == "SANDBOX::SANDBOX_NOT_RUNNING"
    assert caught.value.message == ""


async def test_unexpected_success_body_raises_validation_error(twin: Recorder) -> None:
    twin.reply(json={"id": "sbx-1"})
    client = client_for(twin)
    with pytest.raises(osbox.APIResponseValidationError) as caught:
        await twin.call(client.get_sandbox("sbx-1"))
    assert caught.value.body == {"id": "sbx-1"}
    assert caught.value.status_code == 200


async def test_unknown_fields_and_states_are_tolerated(twin: Recorder) -> None:
    twin.reply(json=dict(SANDBOX, status={"state": "Hibernating"}, newField=1))
    client = client_for(twin)
    sandbox = await twin.call(client.get_sandbox("sbx-1"))
    assert sandbox.status.state == "Hibernating"
    assert not sandbox.status.state.is_known()
    assert sandbox.model_extra == {"newField": 1}
