"""Which network a sandbox gets (`network_choice`), and the Credential Vault's storage (`CredentialVault`)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from osbox.server.egress.networks import NetworkChoice, network_choice
from osbox.server.egress.policy import Policy, PolicyError
from osbox.server.egress.vault import CredentialVault, VaultError

POLICY = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]}


def test_the_server_switch_is_the_default_and_a_policy_means_filtered() -> None:
    assert network_choice("open", None, None) == NetworkChoice("open")
    assert network_choice("none", {}, None) == NetworkChoice("none")
    chosen = network_choice("open", POLICY, None)
    assert chosen.mode == "filtered" and chosen.requested and chosen.policy.default_action == "deny"
    assert network_choice("none", POLICY, None).mode == "filtered"  # asked for: the server must refuse it


def test_the_extension_chooses_explicitly() -> None:
    assert network_choice("filtered", None, "none") == NetworkChoice("none", Policy.allow_all(), True)
    assert network_choice("none", None, " Open ").mode == "open"
    with pytest.raises(PolicyError, match="must be one of none, open, filtered"):
        network_choice("open", None, "nat")
    with pytest.raises(PolicyError, match="needs network mode 'filtered'"):
        network_choice("open", POLICY, "open")


def test_a_bad_policy_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="not a domain"):
        network_choice("open", {"egress": [{"action": "allow", "target": "*"}]}, None)


def test_the_vault_file_opens_for_its_sandbox_only(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    vault = CredentialVault(tmp_path, key, "sbx-1")
    vault.create(
        {"credentials": [{"name": "gh", "source": {"type": "inline", "value": "s3cret"}}], "bindings": []}
    )
    assert b"s3cret" not in (tmp_path / "vault.bin").read_bytes()
    assert vault.state()["credentials"] == [{"name": "gh", "sourceType": "inline", "revision": 1}]
    with pytest.raises(VaultError) as refused:
        CredentialVault(tmp_path, key, "sbx-2").state()  # a copied file does not decrypt elsewhere
    assert refused.value.status == 500


def test_vault_mutations_are_checked_and_atomic(tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path, secrets.token_bytes(32), "sbx-1")
    with pytest.raises(VaultError) as missing:
        vault.state()
    assert missing.value.status == 404
    vault.create({"credentials": [], "bindings": []})
    with pytest.raises(VaultError) as unknown:
        vault.mutate(
            {
                "credentials": {
                    "add": [{"name": "a", "source": {"type": "inline", "value": "x"}}],
                    "delete": ["nope"],
                }
            }
        )
    assert unknown.value.status == 404
    assert vault.state() == {"revision": 1, "credentials": [], "bindings": []}  # nothing half applied
    with pytest.raises(VaultError) as bad_auth:
        vault.mutate({"bindings": {"add": [{"name": "b", "match": {"hosts": ["x.org"]}, "auth": {}}]}})
    assert bad_auth.value.status == 400
    with pytest.raises(VaultError) as stale:
        vault.mutate({"expectedRevision": 7})
    assert stale.value.status == 409
