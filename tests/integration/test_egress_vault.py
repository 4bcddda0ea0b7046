"""The Credential Vault of the egress API (port 18080), through osbox's own `EgressClient`: credentials
stored encrypted and never returned, revisions guarding changes, bindings refused with 412 on a sandbox
without the credential proxy (injection itself: egress/test_credential_injection.py)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from osbox import ConflictError, EgressClient, NotFoundError, PreconditionFailedError, Sandbox
from osbox.models.lifecycle import Endpoint
from osbox.server import LocalServer

from .server_fixtures import API_KEY, lifecycle_client

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


def _osbox(
    server: LocalServer, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `osbox` executable, naming the server, as a user runs it."""
    argv = [str(Path(sys.executable).with_name("osbox")), "egress", *args]
    argv += ["--url", f"{server.base_url}/v1", "--api-key", API_KEY]
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_the_cli_manages_the_vault_without_a_secret_in_argv(
    make_sandbox: Callable[..., dict[str, Any]], lifecycle_server: LocalServer, tmp_path: Path
) -> None:
    sandbox_id = make_sandbox()["id"]
    run = functools.partial(_osbox, lifecycle_server)
    # From the environment (the vault is created by the first credential) ...
    done = run("credential-set", sandbox_id, "gh", "--from-env", "GH_TOKEN", env={"GH_TOKEN": SECRET})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["revision: 1", "credential gh inline ******** (revision 1)"]
    # ... from a file (its trailing newline dropped) and from stdin.
    (tmp_path / "npm").write_text("npm-secret-value\n")
    assert run("credential-set", sandbox_id, "npm", "--from-file", str(tmp_path / "npm")).returncode == 0
    done = run("credential-set", sandbox_id, "pypi", stdin="pypi-secret-value\n")
    assert done.returncode == 0, done.stderr
    listed = run("credentials", sandbox_id)
    assert listed.stdout.splitlines() == [
        "revision: 3",
        "credential gh inline ******** (revision 1)",
        "credential npm inline ******** (revision 2)",
        "credential pypi inline ******** (revision 3)",
    ]
    assert run("credentials", sandbox_id, "npm").stdout == "credential npm inline ******** (revision 2)\n"
    # Replacing keeps the name; the values went through as given and are never shown.
    assert run("credential-set", sandbox_id, "gh", stdin="other").returncode == 0
    shown = run("vault", sandbox_id).stdout
    assert "credential gh inline ******** (revision 4)" in shown
    assert all(value not in shown for value in (SECRET, "npm-secret-value", "pypi-secret-value", "other"))
    with _egress_client(lifecycle_server, sandbox_id) as egress:
        state = egress.get_credential_vault()
    assert state.revision == 4 and [c.name for c in state.credentials] == ["gh", "npm", "pypi"]

    # A stale revision is refused; removal; errors are one line and status 1.
    stale = run("credential-rm", sandbox_id, "npm", "--expected-revision", "1")
    assert stale.returncode == 1 and "revision 4" in stale.stderr and stale.stderr.count("\n") == 1
    assert run("credential-rm", sandbox_id, "npm", "pypi").stdout.splitlines() == [
        "revision: 5",
        "credential gh inline ******** (revision 4)",
    ]
    missing = run("credential-set", sandbox_id, "x", "--from-env", "NOT_SET_ANYWHERE")
    assert missing.returncode == 1 and "NOT_SET_ANYWHERE" in missing.stderr
    # Without the credential proxy a binding is refused, saying why (412), and nothing changes.
    refused = run("binding-set", sandbox_id, "gh-api", "--host", "api.github.com", "--bearer", "gh")
    assert refused.returncode == 1 and "credentialProxy" in refused.stderr
    assert run("bindings", sandbox_id).stdout == "revision: 5\n"
    usage = run("binding-set", sandbox_id, "gh-api", "--host", "x.org", "--bearer", "gh", "--basic", "gh")
    assert usage.returncode == 2 and "exactly one of" in usage.stderr
    assert run("vault-rm", sandbox_id).stdout == "vault deleted\n"
    gone = run("vault", sandbox_id)
    assert gone.returncode == 1 and "POST one first" in gone.stderr


def _egress_client(server: LocalServer, sandbox_id: str) -> EgressClient:
    with lifecycle_client(server) as api:
        return _egress(api, sandbox_id)


def test_the_sync_sandbox_sets_and_removes_credentials_by_name(
    make_sandbox: Callable[..., dict[str, Any]], lifecycle_server: LocalServer
) -> None:
    sandbox_id = make_sandbox()["id"]
    url = f"{lifecycle_server.base_url}/v1"
    with Sandbox.connect(sandbox_id, base_url=url, api_key=API_KEY) as sandbox:
        assert sandbox.egress.set_credential("gh", SECRET).revision == 1
        assert sandbox.egress.set_credential("gh", SECRET + "2").revision == 2  # replaced, not added
        vault = sandbox.egress.vault()
        assert [(c.name, c.revision) for c in vault.credentials] == [("gh", 2)]
        assert SECRET not in vault.model_dump_json()
        assert sandbox.egress.remove_credentials(["gh"]).credentials == []
        sandbox.egress.delete_vault()
        with pytest.raises(NotFoundError):
            sandbox.egress.vault()
