"""EgressClient and AsyncEgressClient over a mock transport: every operation on both twins.

Each captured request is validated against `egress-api.yaml`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pydantic
import pytest

import osbox
from osbox import AsyncEgressClient, EgressClient
from osbox.models import Endpoint
from osbox.models.egress import (
    BearerCredentialAuth,
    Credential,
    CredentialBinding,
    CredentialMatch,
    CredentialVaultMutationRequest,
    EgressMode,
    InlineCredentialSource,
    NetworkRule,
)
from tests.spec_check import SpecCheck

from .conftest import Recorder

TOKEN = "egress-token-secret-987"
EGRESS_URL = "http://10.0.0.7:18080"
POLICY = {
    "status": "ok",
    "mode": "deny_all",
    "enforcementMode": "dns",
    "policy": {"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]},
}
VAULT = {
    "revision": 3,
    "credentials": [{"name": "gh", "sourceType": "inline", "revision": 3}],
    "bindings": [
        {
            "name": "gh-api",
            "revision": 3,
            "match": {"hosts": ["api.github.com"]},
            "auth": {"type": "bearer"},
        }
    ],
}


def client_for(twin: Recorder, **options: Any) -> Any:
    options.setdefault("max_retries", 0)
    return twin.client(EgressClient, AsyncEgressClient, EGRESS_URL, TOKEN, **options)


def check(request: httpx2.Request, base_url: str = EGRESS_URL) -> None:
    SpecCheck.load().request("egress", request, base_url=base_url)


def body(request: httpx2.Request) -> Any:
    return json.loads(request.content)


# -- headers and endpoints ------------------------------------------------------------------------


async def test_requests_carry_the_egress_token(twin: Recorder) -> None:
    twin.reply(json=POLICY)
    client = client_for(twin)
    await twin.call(client.get_policy())
    assert twin.last.headers["OPENSANDBOX-EGRESS-AUTH"] == TOKEN
    assert TOKEN not in repr(client)


async def test_without_a_token_no_auth_header_is_sent(twin: Recorder) -> None:
    twin.reply(json=POLICY)
    client = twin.client(EgressClient, AsyncEgressClient, EGRESS_URL)
    await twin.call(client.get_policy())
    assert "OPENSANDBOX-EGRESS-AUTH" not in twin.last.headers


async def test_from_endpoint_adds_scheme_keeps_prefix_and_forwards_headers(twin: Recorder) -> None:
    endpoint = Endpoint(
        endpoint="127.0.0.1:8080/sandboxes/sbx-1/proxy/18080",
        headers={"OPENSANDBOX-EGRESS-AUTH": TOKEN, "X-Gateway-Route": "r-1"},
    )
    cls = AsyncEgressClient if twin.is_async else EgressClient
    client = cls.from_endpoint(endpoint, headers={"X-Extra": "yes"}, http_client=twin.http_client())
    assert client.base_url == "http://127.0.0.1:8080/sandboxes/sbx-1/proxy/18080"
    twin.reply(json=POLICY)
    await twin.call(client.get_policy())
    assert str(twin.last.url) == "http://127.0.0.1:8080/sandboxes/sbx-1/proxy/18080/policy"
    assert twin.last.headers["OPENSANDBOX-EGRESS-AUTH"] == TOKEN
    assert twin.last.headers["X-Gateway-Route"] == "r-1"
    assert twin.last.headers["X-Extra"] == "yes"
    assert TOKEN not in repr(client)
    check(twin.last, base_url=client.base_url)


async def test_from_endpoint_keeps_an_existing_scheme(twin: Recorder) -> None:
    endpoint = Endpoint(endpoint="https://gw.example/route/abc")
    cls = AsyncEgressClient if twin.is_async else EgressClient
    client = cls.from_endpoint(endpoint, http_client=twin.http_client())
    assert client.base_url == "https://gw.example/route/abc"


# -- policy ---------------------------------------------------------------------------------------


async def test_get_policy(twin: Recorder) -> None:
    twin.reply(json=POLICY)
    client = client_for(twin)
    status = await twin.call(client.get_policy())
    assert (twin.last.method, twin.last.url.path) == ("GET", "/policy")
    assert status.mode is EgressMode.DENY_ALL
    assert status.policy.egress == [NetworkRule(action="allow", target="pypi.org")]
    check(twin.last)


async def test_patch_policy_sends_the_rules_array(twin: Recorder) -> None:
    twin.reply(json={"status": "ok", "mode": "enforcing", "enforcementMode": "dns+nft"})
    client = client_for(twin)
    status = await twin.call(
        client.patch_policy(
            [NetworkRule(action="allow", target="example.com"), {"action": "deny", "target": "*.bad.org"}]
        )
    )
    assert (twin.last.method, twin.last.url.path) == ("PATCH", "/policy")
    assert body(twin.last) == [
        {"action": "allow", "target": "example.com"},
        {"action": "deny", "target": "*.bad.org"},
    ]
    assert status.enforcement_mode == "dns+nft"
    check(twin.last)


async def test_delete_policy_rules_sends_the_targets_array(twin: Recorder) -> None:
    twin.reply(json={"status": "ok", "mode": "deny_all", "reason": "no matching rule"})
    twin.reply(json=POLICY)
    client = client_for(twin)
    status = await twin.call(client.delete_policy_rules(["t1", "t2"]))
    assert (twin.last.method, twin.last.url.path) == ("DELETE", "/policy")
    assert body(twin.last) == ["t1", "t2"]
    assert status.reason == "no matching rule"
    check(twin.last)
    await twin.call(client.delete_policy_rules("single.example"))
    assert body(twin.last) == ["single.example"]


async def test_policy_input_is_validated_before_sending(twin: Recorder) -> None:
    client = client_for(twin)
    with pytest.raises(pydantic.ValidationError):
        await twin.call(client.patch_policy([]))
    with pytest.raises(pydantic.ValidationError):
        await twin.call(client.patch_policy([{"action": "maybe", "target": "x"}]))
    with pytest.raises(pydantic.ValidationError):
        await twin.call(client.delete_policy_rules([]))
    assert twin.requests == []


async def test_text_plain_errors_of_the_sidecar(twin: Recorder) -> None:
    twin.reply(401, content=b"unauthorized", headers={"Content-Type": "text/plain"})
    client = client_for(twin)
    with pytest.raises(osbox.AuthenticationError) as caught:
        await twin.call(client.get_policy())
    assert caught.value.code == "Unauthorized"
    assert caught.value.message == "unauthorized"
    assert TOKEN not in str(caught.value)


# -- credential vault -----------------------------------------------------------------------------


def vault_entries() -> tuple[Credential, CredentialBinding]:
    credential = Credential(name="gh", source=InlineCredentialSource(value="ghp_SECRET"))
    binding = CredentialBinding(
        name="gh-api",
        match=CredentialMatch(hosts=["api.github.com"]),
        auth=BearerCredentialAuth(credential="gh"),
    )
    return credential, binding


async def test_create_credential_vault(twin: Recorder) -> None:
    twin.reply(201, json=VAULT)
    client = client_for(twin)
    credential, binding = vault_entries()
    state = await twin.call(client.create_credential_vault(credentials=[credential], bindings=[binding]))
    assert (twin.last.method, twin.last.url.path) == ("POST", "/credential-vault")
    assert body(twin.last) == {
        "credentials": [{"name": "gh", "source": {"type": "inline", "value": "ghp_SECRET"}}],
        "bindings": [
            {
                "name": "gh-api",
                "match": {"hosts": ["api.github.com"]},
                "auth": {"type": "bearer", "credential": "gh"},
            }
        ],
    }
    assert state.revision == 3
    assert "ghp_SECRET" not in repr(credential)
    check(twin.last)


async def test_create_credential_vault_empty_sends_both_arrays(twin: Recorder) -> None:
    twin.reply(201, json={"revision": 1, "credentials": [], "bindings": []})
    client = client_for(twin)
    await twin.call(client.create_credential_vault())
    assert body(twin.last) == {"credentials": [], "bindings": []}
    check(twin.last)


async def test_get_and_delete_credential_vault(twin: Recorder) -> None:
    twin.reply(json=VAULT)
    twin.reply(204)
    client = client_for(twin)
    state = await twin.call(client.get_credential_vault())
    assert (twin.last.method, twin.last.url.path) == ("GET", "/credential-vault")
    assert state.bindings[0].auth.type == "bearer"
    check(twin.last)
    assert await twin.call(client.delete_credential_vault()) is None
    assert (twin.last.method, twin.last.url.path) == ("DELETE", "/credential-vault")
    check(twin.last)


async def test_patch_credential_vault_with_expected_revision(twin: Recorder) -> None:
    twin.reply(json=dict(VAULT, revision=4))
    client = client_for(twin)
    credential, _ = vault_entries()
    state = await twin.call(
        client.patch_credential_vault(
            expected_revision=3,
            credentials={"replace": [credential]},
            bindings={"delete": ["old-binding"]},
        )
    )
    assert (twin.last.method, twin.last.url.path) == ("PATCH", "/credential-vault")
    assert body(twin.last) == {
        "expectedRevision": 3,
        "credentials": {"replace": [{"name": "gh", "source": {"type": "inline", "value": "ghp_SECRET"}}]},
        "bindings": {"delete": ["old-binding"]},
    }
    assert state.revision == 4
    check(twin.last)


async def test_patch_credential_vault_with_a_request(twin: Recorder) -> None:
    twin.reply(json=VAULT)
    client = client_for(twin)
    await twin.call(
        client.patch_credential_vault(CredentialVaultMutationRequest(bindings={"delete": ["b"]}))  # type: ignore[arg-type]
    )
    assert body(twin.last) == {"bindings": {"delete": ["b"]}}
    check(twin.last)
    with pytest.raises(TypeError, match="not both"):
        await twin.call(client.patch_credential_vault(CredentialVaultMutationRequest(), expected_revision=1))


async def test_revision_conflict_is_a_conflict_error(twin: Recorder) -> None:
    twin.reply(409, content=b"revision mismatch: expected 3, current 5")
    client = client_for(twin)
    with pytest.raises(osbox.ConflictError) as caught:
        await twin.call(client.patch_credential_vault(expected_revision=3))
    assert caught.value.message == "revision mismatch: expected 3, current 5"


async def test_list_and_get_credentials(twin: Recorder) -> None:
    twin.reply(json={"revision": 3, "credentials": VAULT["credentials"]})
    twin.reply(json={"name": "my key/1", "sourceType": "inline", "revision": 3})
    client = client_for(twin)
    listing = await twin.call(client.list_credentials())
    assert twin.last.url.path == "/credential-vault/credentials"
    assert [c.name for c in listing.credentials] == ["gh"]
    check(twin.last)
    credential = await twin.call(client.get_credential("my key/1"))
    assert twin.last.url.raw_path == b"/credential-vault/credentials/my%20key%2F1"
    assert credential.source_type == "inline"
    check(twin.last)


async def test_list_and_get_bindings(twin: Recorder) -> None:
    twin.reply(json={"revision": 3, "bindings": VAULT["bindings"]})
    twin.reply(json={"name": "a/b c", "revision": 3, "auth": {"type": "apiKey", "name": "X-Key"}})
    client = client_for(twin)
    listing = await twin.call(client.list_bindings())
    assert twin.last.url.path == "/credential-vault/bindings"
    assert listing.bindings[0].match.hosts == ["api.github.com"]
    check(twin.last)
    binding = await twin.call(client.get_binding("a/b c"))
    assert twin.last.url.raw_path == b"/credential-vault/bindings/a%2Fb%20c"
    assert binding.auth.name == "X-Key"
    check(twin.last)
