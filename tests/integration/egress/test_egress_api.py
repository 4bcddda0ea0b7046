"""The egress HTTP app over a real `SandboxEgress` in the fake internet, driven by osbox's own client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from osbox import AsyncEgressClient
from osbox.server.egress.app import AUTH_HEADER, create_egress_app

from .fake_internet import FakeInternet
from .netns import requires_netns

pytestmark = requires_netns

TOKEN = "egress-token-for-the-test"
BASE = "http://egress.test"
CURL_COULDNT_RESOLVE = 6


@pytest.fixture
async def http(internet: FakeInternet) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_egress_app(internet.egress, auth_token=TOKEN)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def test_the_api_governs_the_sandbox_network(internet: FakeInternet, http: httpx2.AsyncClient) -> None:
    async with AsyncEgressClient(BASE, TOKEN, http_client=http, headers={AUTH_HEADER: TOKEN}) as egress:
        status = await egress.get_policy()
        assert (status.mode, status.enforcement_mode) == ("allow_all", "dns+nft")
        assert (await internet.fetch("denied.test")).stdout == "denied.test"

        reset = await http.post("/policy", content=b"", headers={AUTH_HEADER: TOKEN})
        assert reset.json()["mode"] == "deny_all"
        assert (await internet.fetch("allowed.test")).returncode == CURL_COULDNT_RESOLVE

        await egress.patch_policy([{"action": "allow", "target": "*.allowed.test"}])
        await egress.patch_policy([{"action": "allow", "target": "allowed.test"}])
        assert (await internet.fetch("allowed.test")).stdout == "allowed.test"
        assert (await internet.fetch("cdn.allowed.test")).stdout == "cdn.allowed.test"

        await egress.delete_policy_rules(["*.allowed.test"])
        assert (await internet.fetch("cdn.allowed.test")).returncode == CURL_COULDNT_RESOLVE
        assert (await internet.fetch("allowed.test")).stdout == "allowed.test"


async def test_a_wrong_or_missing_token_changes_nothing(
    internet: FakeInternet, http: httpx2.AsyncClient
) -> None:
    for headers in ({}, {AUTH_HEADER: "not-the-token"}):
        response = await http.post("/policy", content=b"", headers=headers)
        assert response.status_code == 401
    assert (await internet.fetch("allowed.test")).stdout == "allowed.test"
