"""The egress app's `/credential-vault` routes over a real `CredentialVault` (files in tmp_path), driven
by osbox's own `AsyncEgressClient`: the spec's answers, and the client's by-name helpers; the credential
proxy's capped log."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox import AsyncEgressClient, ConflictError, NotFoundError
from osbox.server.egress.app import create_egress_app
from osbox.server.egress.credential_proxy import _CappedLog, _secrets
from osbox.server.egress.enforcer import Enforcement
from osbox.server.egress.policy import Policy
from osbox.server.egress.vault import CredentialVault

BASE = "http://egress.test"
BEARER = {
    "name": "gh-api",
    "match": {"hosts": ["api.example.com"]},
    "auth": {"type": "bearer", "credential": "gh"},
}


@dataclass
class _Store:
    policy: Policy = field(default_factory=Policy.allow_all)
    enforcement: Enforcement = field(default_factory=lambda: Enforcement("dns+nft"))

    async def replace(self, policy: Policy) -> None:
        self.policy = policy


@dataclass
class Vault:
    http: httpx2.AsyncClient
    egress: AsyncEgressClient
    published: list[list[dict[str, Any]]]


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    published: list[list[dict[str, Any]]] = []

    async def sink(rules: list[dict[str, Any]]) -> None:
        published.append(rules)

    store = CredentialVault(tmp_path, secrets.token_bytes(32), "sbx-1")
    app = create_egress_app(_Store(), auth_token=None, vault=store, on_bindings=sink)
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE)
    async with http, AsyncEgressClient(BASE, http_client=http) as egress:
        yield Vault(http, egress, published)


async def test_set_creates_the_vault_then_adds_and_replaces_by_name(vault: Vault) -> None:
    egress = vault.egress
    state = await egress.set_credential("gh", "first-value")
    assert state.revision == 1 and [c.name for c in state.credentials] == ["gh"]
    state = await egress.set_binding(BEARER)
    assert state.revision == 2 and [b.name for b in state.bindings] == ["gh-api"]
    state = await egress.set_credential("gh", "second-value")
    assert state.revision == 3 and [(c.name, c.revision) for c in state.credentials] == [("gh", 3)]
    # Each change reached the proxy, the last one with the replaced value.
    assert vault.published[-1][0]["headers"] == [["Authorization", "Bearer second-value"]]
    with pytest.raises(ConflictError, match="revision 3"):
        await egress.set_credential("npm", "v", expected_revision=2)
    with pytest.raises(ConflictError, match="names credential"):  # a binding still needs it
        await egress.remove_credentials(["gh"])
    state = await egress.remove_bindings("gh-api")
    assert state.bindings == [] and vault.published[-1] == []
    state = await egress.remove_credentials(["gh"], expected_revision=state.revision)
    assert state.credentials == []
    with pytest.raises(NotFoundError, match="no binding 'nope'"):
        await egress.remove_bindings(["nope"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/credential-vault", {"credentials": []}, 400, "INVALID_REQUEST"),  # both required
        ("POST", "/credential-vault", {"credentials": [], "bindings": [], "x": 1}, 400, "INVALID_REQUEST"),
        ("PATCH", "/credential-vault", {"expectedRevision": "1"}, 400, "INVALID_REQUEST"),
        ("PATCH", "/credential-vault", {"expectedRevision": 7}, 409, "CONFLICT"),
        ("PUT", "/credential-vault", {}, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/credential-vault/credentials", {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/credential-vault/credentials/a%2Fb", None, 404, "NOT_FOUND"),
        ("GET", "/credential-vault/bindings/none", None, 404, "NOT_FOUND"),
        ("GET", "/credential-vault/other", None, 404, "NOT_FOUND"),
    ],
)
async def test_refusals_are_code_and_message(
    vault: Vault, method: str, path: str, body: object, status: int, code: str
) -> None:
    await vault.egress.set_credential("gh", "value")
    answer = await vault.http.request(method, path, json=body)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.json()["message"]


def test_the_proxy_log_is_rotated_at_its_cap_and_masks_secrets(tmp_path: Path) -> None:
    log = _CappedLog(tmp_path / "proxy.log", 2048)
    table = {"100.96.0.2": [{"headers": [["Authorization", "Bearer tok-123456"], ["X-Key", "k-abcdef"]]}]}
    log.secrets = _secrets(table)
    for n in range(100):
        log.write(f"line {n}: upstream refused Bearer tok-123456 / key k-abcdef / bare tok-123456\n".encode())
    log.close()
    current, rotated = tmp_path / "proxy.log", tmp_path / "proxy.log.1"
    assert 0 < current.stat().st_size <= 2048 and 0 < rotated.stat().st_size <= 2048
    text = current.read_text()
    assert "line 99" in text and "tok-123456" not in text and "k-abcdef" not in text
    assert "refused [secret] / key [secret] / bare [secret]" in text
    assert (current.stat().st_mode & 0o777, rotated.stat().st_mode & 0o777) == (0o600, 0o600)


async def test_an_overlong_line_is_left_out_whole(tmp_path: Path) -> None:
    log = _CappedLog(tmp_path / "proxy.log", 1 << 20)
    log.secrets = _secrets({"a": [{"headers": [["X-Key", "k-abcdef"]]}]})
    for pieces in ([b""], [b"k-abc", b"def" + b"y" * 80000]):  # whole, or arriving in pieces
        output = asyncio.StreamReader()  # the default limit: 64 KiB
        copying = asyncio.create_task(log.copy(output))
        output.feed_data(b"x" * 65530 + b"k-abcdef" + b"y" * 50000)
        for piece in pieces:
            await asyncio.sleep(0)  # the copy reads what is there so far
            output.feed_data(piece)
        output.feed_data(b"\nnext line k-abcdef\nlast k-abcdef")
        output.feed_eof()
        await copying
    log.close()
    expected = "[a line over 64 KiB, left out]\nnext line [secret]\nlast [secret]"
    assert (tmp_path / "proxy.log").read_text() == expected * 2
