# Generated from src/osbox/_async/sandbox_egress.py by scripts/unasync.py: do not edit.
"""`SandboxEgress`: `sandbox.egress`, the sandbox's outbound network policy at runtime.

    with Sandbox.create(network_policy={"defaultAction": "deny"}) as sandbox:
        sandbox.egress.patch([{"action": "allow", "target": "pypi.org"}])
        status = sandbox.egress.get()      # status.policy, status.mode, status.enforcement_mode
        sandbox.egress.remove(["pypi.org"])

It sits on the sandbox's egress API (port 18080), reached through the endpoint the lifecycle API gives
(its `OPENSANDBOX-EGRESS-AUTH` header included). Its Credential Vault, for a sandbox created with
`credential_proxy=True` (the proxy sets the bindings' headers on matching HTTPS requests):

    sandbox.egress.set_credential("gh", os.environ["GITHUB_TOKEN"])
    sandbox.egress.set_binding({"name": "gh-api", "match": {"hosts": ["api.github.com"]},
                                      "auth": {"type": "bearer", "credential": "gh"}})
    vault = sandbox.egress.vault()        # revision, credentials and bindings: never a value
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._base_client import ClientOptions
from .._wire import EGRESS_PORT
from ..models.egress import (
    CredentialBinding,
    CredentialVaultState,
    NetworkPolicy,
    NetworkRule,
    PolicyStatusResponse,
)
from .egress import EgressClient
from .lifecycle import LifecycleClient

__all__ = ["SandboxEgress"]


class SandboxEgress:
    """Get, patch, replace and remove the egress rules of one sandbox (`sandbox.egress`)."""

    def __init__(
        self, sandbox_id: Callable[[], str], lifecycle: LifecycleClient, options: ClientOptions
    ) -> None:
        # A function, not the id: it is known only once the sandbox is created.
        self._sandbox_id = sandbox_id
        self._lifecycle = lifecycle
        self._options = options
        self._client: EgressClient | None = None

    def client(self) -> EgressClient:
        """The egress client of this sandbox, for the Credential Vault too (opened on first use from
        the endpoint the lifecycle API gives, closed with the sandbox)."""
        if self._client is None:
            endpoint = self._lifecycle.get_endpoint(self._sandbox_id(), EGRESS_PORT)
            self._client = EgressClient.from_endpoint(endpoint, **self._options)
        return self._client

    def get(self) -> PolicyStatusResponse:
        """The policy in force, its derived mode and how it is enforced (`enforcement_mode`, `reason`)."""
        client = self.client()
        return client.get_policy()

    def patch(self, rules: Sequence[NetworkRule | Mapping[str, Any]]) -> PolicyStatusResponse:
        """Put `rules` ahead of the current ones (the first rule per target wins); new connections see it.

        sandbox.egress.patch([{"action": "allow", "target": "*.pypi.org"}])
        """
        client = self.client()
        return client.patch_policy(rules)

    def replace(self, policy: NetworkPolicy | Mapping[str, Any] | None) -> PolicyStatusResponse:
        """Replace the whole policy; None denies everything.

        sandbox.egress.replace({"defaultAction": "deny", "egress": [{"action": "allow", "target": "x.org"}]})
        """
        client = self.client()
        return client.replace_policy(policy)

    def remove(self, targets: Sequence[str]) -> PolicyStatusResponse:
        """Remove the rules for these targets (unknown ones are ignored).

        sandbox.egress.remove(["pypi.org"])
        """
        client = self.client()
        return client.delete_policy_rules(targets)

    # -- credential vault ----------------------------------------------------------------------------

    def vault(self) -> CredentialVaultState:
        """The Credential Vault: its revision, credentials and bindings, never a credential's value
        (`NotFoundError` while the sandbox has none)."""
        client = self.client()
        return client.get_credential_vault()

    def set_credential(
        self, name: str, value: str, *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Store `value` as the credential `name` (added or replaced; the vault created if need be).

        sandbox.egress.set_credential("gh", os.environ["GITHUB_TOKEN"])
        """
        client = self.client()
        return client.set_credential(name, value, expected_revision=expected_revision)

    def set_binding(
        self, binding: CredentialBinding | Mapping[str, Any], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Add the binding or replace the one of its name; in force for the sandbox's next request.

        sandbox.egress.set_binding({"name": "gh-api", "match": {"hosts": ["api.github.com"]},
                                    "auth": {"type": "bearer", "credential": "gh"}})
        """
        client = self.client()
        return client.set_binding(binding, expected_revision=expected_revision)

    def remove_credentials(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these credentials (a binding that names one must go first: `ConflictError`)."""
        client = self.client()
        return client.remove_credentials(names, expected_revision=expected_revision)

    def remove_bindings(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these bindings: their headers are no longer set from the next request on."""
        client = self.client()
        return client.remove_bindings(names, expected_revision=expected_revision)

    def delete_vault(self) -> None:
        """Delete the vault, its credentials and bindings."""
        client = self.client()
        client.delete_credential_vault()

    def close(self) -> None:
        """Close the egress client, if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None
