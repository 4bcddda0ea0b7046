"""The Credential Vault of the egress API (port 18080), through osbox's own `EgressClient`: credentials
stored encrypted and never returned, revisions guarding changes, bindings refused with 412 on a sandbox
without the credential proxy (injection itself: egress/test_credential_injection.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox import ConflictError, EgressClient, NotFoundError, PreconditionFailedError
from osbox.models.lifecycle import Endpoint
from osbox.server import LocalServer

SECRET = "ghp_not-a-real-token-but-secret-enough"


def _egress(api: httpx2.Client, sandbox_id: str) -> EgressClient:
    endpoint = Endpoint.model_validate(api.get(f"/sandboxes/{sandbox_id}/endpoints/18080").json())
    return EgressClient.from_endpoint(endpoint)


def test_credentials_are_kept_encrypted_and_never_returned(
    api: httpx2.Client, make_sandbox: Callable[..., dict[str, Any]], lifecycle_server: LocalServer
) -> None:
    sandbox_id = make_sandbox()["id"]
    with _egress(api, sandbox_id) as egress:
        with pytest.raises(NotFoundError):
            egress.get_credential_vault()
        created = egress.create_credential_vault(
            credentials=[{"name": "gh", "source": {"type": "inline", "value": SECRET}}]
        )
        assert created.revision == 1
        assert [(c.name, c.source_type) for c in created.credentials] == [("gh", "inline")]
        assert SECRET not in created.model_dump_json()
        assert egress.get_credential("gh").revision == 1
        assert egress.list_bindings().bindings == []

        stored = Path(lifecycle_server.data_dir, "sandboxes", sandbox_id, "vault.bin")
        assert stored.stat().st_mode & 0o777 == 0o600
        assert SECRET.encode() not in stored.read_bytes()

        changed = egress.patch_credential_vault(
            expected_revision=1,
            credentials={"add": [{"name": "npm", "source": {"type": "inline", "value": "npm-token"}}]},
        )
        assert changed.revision == 2 and {c.name for c in changed.credentials} == {"gh", "npm"}
        with pytest.raises(ConflictError):
            egress.patch_credential_vault(expected_revision=1, credentials={"delete": ["gh"]})
        egress.delete_credential_vault()
        with pytest.raises(NotFoundError):
            egress.list_credentials()


def test_bindings_without_the_credential_proxy_are_refused_and_store_nothing(
    api: httpx2.Client, make_sandbox: Callable[..., dict[str, Any]]
) -> None:
    auth = {"type": "bearer", "credential": "gh"}
    binding = {"name": "gh-api", "match": {"hosts": ["api.github.com"]}, "auth": auth}
    credential = {"name": "gh", "source": {"type": "inline", "value": SECRET}}
    with _egress(api, make_sandbox()["id"]) as egress:
        with pytest.raises(PreconditionFailedError, match="credentialProxy") as refused:
            egress.create_credential_vault(credentials=[credential], bindings=[binding])
        assert refused.value.status_code == 412
        with pytest.raises(NotFoundError):
            egress.get_credential_vault()
