"""The egress HTTP app (`/policy`, `/healthz`) over an in-memory store, driven by osbox's own client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx2
import pytest

from osbox import AsyncEgressClient
from osbox.models.egress import NetworkRule
from osbox.server.egress.app import AUTH_HEADER, create_egress_app
from osbox.server.egress.enforcer import Enforcement
from osbox.server.egress.engine import EgressUnavailable
from osbox.server.egress.policy import MAX_RULES, Policy, policy_from_body

TOKEN = "s3cret-egress-token"
BASE = "http://egress.test"


@dataclass
class MemoryStore:
    """A policy store that keeps the policy in memory and records every replacement."""

    policy: Policy = field(default_factory=Policy.allow_all)
    enforcement: Enforcement = field(default_factory=lambda: Enforcement("dns+nft"))
    replaced: list[Policy] = field(default_factory=list)

    async def replace(self, policy: Policy) -> None:
        if self.enforcement.mode != "dns+nft" and policy != Policy.allow_all():
            raise EgressUnavailable(f"cannot enforce an egress policy here: {self.enforcement.reason}")
        self.replaced.append(policy)
        self.policy = policy


@dataclass
class Api:
    store: MemoryStore
    http: httpx2.AsyncClient
    egress: AsyncEgressClient


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = MemoryStore()
    transport = httpx2.ASGITransport(app=create_egress_app(store, auth_token=TOKEN))
    http = httpx2.AsyncClient(transport=transport, base_url=BASE, headers={AUTH_HEADER: TOKEN})
    async with http, AsyncEgressClient(BASE, TOKEN, http_client=http) as egress:
        yield Api(store, http, egress)


async def test_get_reports_policy_mode_and_enforcement(api: Api) -> None:
    api.store.policy = policy_from_body(
        {"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]}
    )
    answer = await api.egress.get_policy()
    assert answer.status == "ok"
    assert answer.mode == "enforcing"
    assert answer.enforcement_mode == "dns+nft"
    assert answer.policy is not None
    assert answer.policy.default_action == "deny"
    assert answer.policy.egress == [NetworkRule(action="allow", target="pypi.org")]


async def test_the_go_sdk_readme_flow_get_then_patch(api: Api) -> None:
    first = await api.egress.get_policy()
    assert (first.mode, first.policy and first.policy.default_action) == ("allow_all", "allow")
    patched = await api.egress.patch_policy([{"action": "allow", "target": "api.example.com"}])
    assert patched.mode == "enforcing"
    assert api.store.policy.decide("api.example.com") == "allow"


async def test_post_and_put_replace_and_an_empty_body_denies_all(api: Api) -> None:
    body = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "*.pypi.org"}]}
    for method in ("POST", "PUT"):
        response = await api.http.request(method, "/policy", json=body)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "mode": "enforcing", "enforcementMode": "dns+nft"}
        assert api.store.policy == policy_from_body(body)
    response = await api.http.post("/policy", content=b"")
    assert response.json() == {
        "status": "ok",
        "mode": "deny_all",
        "enforcementMode": "dns+nft",
        "reason": "policy reset to default deny-all",
    }
    assert api.store.policy == Policy.deny_all()


async def test_patch_merges_ahead_and_delete_removes(api: Api) -> None:
    api.store.policy = policy_from_body({"egress": [{"action": "allow", "target": "a.test"}]})
    await api.egress.patch_policy(
        [{"action": "deny", "target": "b.test"}, {"action": "allow", "target": "B.test"}]
    )
    assert [(r.action, r.target) for r in api.store.policy.rules] == [("deny", "b.test"), ("allow", "a.test")]
    answer = await api.egress.delete_policy_rules(["A.TEST"])
    assert answer.reason is None
    assert [r.target for r in api.store.policy.rules] == ["b.test"]
    noop = await api.egress.delete_policy_rules(["nothing.test"])
    assert noop.reason == "no rule matched the given targets"
    assert len(api.store.replaced) == 2  # the no-op delete changed nothing


@pytest.mark.parametrize(
    ("method", "body", "message"),
    [
        ("POST", b"{nope", "not valid JSON"),
        ("POST", b'{"defaultAction": "sometimes"}', "defaultAction: must be 'allow' or 'deny'"),
        ("PUT", b'{"egress": [{"action": "allow", "target": "a b"}]}', "is not a domain"),
        ("PATCH", b"[]", "non-empty JSON array of rules"),
        ("PATCH", b"", "a JSON request body is required"),
        ("DELETE", b"[1]", "every target must be a string"),
        ("POST", b"x" * (2 << 20), "larger than"),
    ],
)
async def test_bad_bodies_get_400_with_a_clear_message(
    api: Api, method: str, body: bytes, message: str
) -> None:
    before = api.store.policy
    response = await api.http.request(method, "/policy", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST"
    assert message in response.json()["message"]
    assert api.store.policy == before


async def test_more_rules_than_the_cap_get_400(api: Api) -> None:
    rules = [{"action": "allow", "target": f"h{i}.test"} for i in range(MAX_RULES + 1)]
    response = await api.http.post("/policy", json={"egress": rules})
    assert response.status_code == 400
    assert response.json()["message"] == f"too many egress rules: {MAX_RULES + 1} (at most {MAX_RULES})"


@pytest.mark.parametrize("headers", [{}, {AUTH_HEADER: "wrong"}, {AUTH_HEADER: TOKEN + "x"}])
async def test_the_auth_token_is_required_on_policy_but_not_healthz(
    api: Api, headers: dict[str, str]
) -> None:
    app = create_egress_app(api.store, auth_token=TOKEN)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as bare:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            response = await bare.request(method, "/policy", headers=headers, json=[])
            assert response.status_code == 401
            assert response.json()["code"] == "UNAUTHORIZED"
            assert TOKEN not in response.text
        health = await bare.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok")
    assert api.store.replaced == []


async def test_without_nftables_a_filtering_policy_is_refused_with_the_reason(api: Api) -> None:
    api.store.enforcement = Enforcement("dns", "nftables is not installed (apt-get install nftables)")
    response = await api.http.patch("/policy", json=[{"action": "deny", "target": "x.test"}])
    assert response.status_code == 501
    assert "nftables is not installed" in response.json()["message"]
    answer = await api.egress.get_policy()
    assert answer.enforcement_mode == "dns"
    assert answer.reason == "nftables is not installed (apt-get install nftables)"


async def test_other_methods_get_405(api: Api) -> None:
    response = await api.http.request("OPTIONS", "/policy")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
