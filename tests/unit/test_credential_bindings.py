"""Credential Vault bindings (vault.py) and the proxy's matching of them (injection_addon.py)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from osbox.server.egress.credential_proxy import render_intercept_table
from osbox.server.egress.injection_addon import host_matches, rules_match
from osbox.server.egress.vault import CredentialVault, VaultError

TOKEN = {"name": "gh", "source": {"type": "inline", "value": "s3cret"}}
BEARER = {
    "name": "gh-api",
    "match": {"hosts": ["api.example.com"]},
    "auth": {"type": "bearer", "credential": "gh"},
}


def _vault(tmp_path: Path, **kwargs: Any) -> CredentialVault:
    return CredentialVault(tmp_path, secrets.token_bytes(32), "sbx-1", **kwargs)


def test_a_binding_is_stored_sealed_and_compiled_with_its_secret(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    state = vault.create({"credentials": [TOKEN], "bindings": [BEARER]})
    assert state["bindings"] == [
        {
            "name": "gh-api",
            "revision": 1,
            "match": {
                "hosts": ["api.example.com"],
                "schemes": ["https"],
                "ports": [443],
                "methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
                "paths": ["/*"],
            },
            "auth": {"type": "bearer"},
        }
    ]
    assert b"s3cret" not in (tmp_path / "vault.bin").read_bytes()
    assert "s3cret" not in repr(vault.state())
    [rule] = vault.rules()
    assert rule["headers"] == [["Authorization", "Bearer s3cret"]]
    assert vault.binding("gh-api")["auth"] == {"type": "bearer"}


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        ({"type": "basic", "credential": "gh"}, [["Authorization", "Basic s3cret"]]),
        ({"type": "apiKey", "name": "X-Api-Key", "credential": "gh"}, [["X-Api-Key", "s3cret"]]),
        (
            {"type": "customHeaders", "headers": [{"name": "X-A", "credential": "gh"}]},
            [["X-A", "s3cret"]],
        ),
    ],
)
def test_each_auth_type_gives_its_headers(
    tmp_path: Path, auth: dict[str, Any], headers: list[list[str]]
) -> None:
    vault = _vault(tmp_path)
    vault.create({"credentials": [TOKEN], "bindings": [{**BEARER, "auth": auth}]})
    assert vault.rules()[0]["headers"] == headers


def test_bindings_must_name_held_credentials(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    with pytest.raises(VaultError) as missing:
        vault.create({"credentials": [], "bindings": [BEARER]})
    assert missing.value.status == 409
    vault.create({"credentials": [TOKEN], "bindings": [BEARER]})
    with pytest.raises(VaultError) as still_used:
        vault.mutate({"credentials": {"delete": ["gh"]}})
    assert still_used.value.status == 409
    state = vault.mutate({"credentials": {"delete": ["gh"]}, "bindings": {"delete": ["gh-api"]}})
    assert state["bindings"] == [] and vault.rules() == []


@pytest.mark.parametrize(
    "match",
    [
        {"hosts": []},
        {"hosts": ["bad host"]},
        {"hosts": ["x.org"], "schemes": ["ftp"]},
        {"hosts": ["x.org"], "ports": [0]},
        {"hosts": ["x.org"], "paths": ["nope"]},
        {"hosts": ["x.org"], "extra": 1},
    ],
)
def test_bad_matches_are_400(tmp_path: Path, match: dict[str, Any]) -> None:
    with pytest.raises(VaultError) as refused:
        _vault(tmp_path).create({"credentials": [TOKEN], "bindings": [{**BEARER, "match": match}]})
    assert refused.value.status == 400


def test_a_sandbox_without_the_proxy_refuses_bindings_but_keeps_credentials(tmp_path: Path) -> None:
    vault = _vault(tmp_path, bindings_refused="credential injection is off for this sandbox")
    with pytest.raises(VaultError) as refused:
        vault.create({"credentials": [TOKEN], "bindings": [BEARER]})
    assert refused.value.status == 412 and "injection is off" in str(refused.value)
    assert vault.create({"credentials": [TOKEN], "bindings": []})["revision"] == 1


def test_hosts_match_exactly_or_by_subdomain_wildcard() -> None:
    assert host_matches("api.example.com", "API.example.com.")
    assert host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "badexample.com")
    assert not host_matches("example.com", "api.example.com")


def test_rules_match_scheme_port_method_and_path() -> None:
    rule = {
        "hosts": ["*.example.com"],
        "schemes": ["https"],
        "ports": [443, 8443],
        "methods": ["GET"],
        "paths": ["/v1/*"],
        "headers": [],
    }
    assert rules_match([rule], host="a.example.com", scheme="https", port=8443) == [rule]
    assert rules_match([rule], host="a.example.com", scheme="https", port=443, method="get", path="/v1/x?q")
    assert not rules_match([rule], host="a.example.com", scheme="http", port=443)
    assert not rules_match([rule], host="a.example.com", scheme="https", port=80)
    assert not rules_match(
        [rule], host="a.example.com", scheme="https", port=443, method="POST", path="/v1/x"
    )
    assert not rules_match([rule], host="a.example.com", scheme="https", port=443, method="GET", path="/v2/x")


def test_the_intercept_table_only_takes_redirected_connections() -> None:
    script = render_intercept_table("osbx", 40123)
    assert "iifname . ip saddr . tcp dport @intercepted redirect to :40123" in script
    assert "tcp dport 40123 ct status dnat accept" in script
    assert script.index("ct status dnat accept") < script.index("tcp dport 40123 drop")
