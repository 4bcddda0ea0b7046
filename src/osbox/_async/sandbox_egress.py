"""`AsyncSandboxEgress`: `sandbox.egress`, the sandbox's outbound network policy at runtime.

    async with await AsyncSandbox.create(network_policy={"defaultAction": "deny"}) as sandbox:
        await sandbox.egress.patch([{"action": "allow", "target": "pypi.org"}])
        status = await sandbox.egress.get()      # status.policy, status.mode, status.enforcement_mode
        await sandbox.egress.remove(["pypi.org"])

It sits on the sandbox's egress API (port 18080), reached through the endpoint the lifecycle API gives
(its `OPENSANDBOX-EGRESS-AUTH` header included). Its Credential Vault, for a sandbox created with
`credential_proxy=True` (the proxy sets the bindings' headers on matching HTTPS requests):

    await sandbox.egress.set_credential("gh", os.environ["GITHUB_TOKEN"])
    await sandbox.egress.set_binding({"name": "gh-api", "match": {"hosts": ["api.github.com"]},
                                      "auth": {"type": "bearer", "credential": "gh"}})
    vault = await sandbox.egress.vault()        # revision, credentials and bindings: never a value
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
from .egress import AsyncEgressClient
from .lifecycle import AsyncLifecycleClient

__all__ = ["AsyncSandboxEgress"]


class AsyncSandboxEgress:
    """Get, patch, replace and remove the egress rules of one sandbox (`sandbox.egress`)."""

    def __init__(
        self, sandbox_id: Callable[[], str], lifecycle: AsyncLifecycleClient, options: ClientOptions
    ) -> None:
        # A function, not the id: it is known only once the sandbox is created.
        self._sandbox_id = sandbox_id
        self._lifecycle = lifecycle
        self._options = options
        self._client: AsyncEgressClient | None = None

    async def client(self) -> AsyncEgressClient:
        """The egress client of this sandbox, for the Credential Vault too (opened on first use from
        the endpoint the lifecycle API gives, closed with the sandbox)."""
        if self._client is None:
            endpoint = await self._lifecycle.get_endpoint(self._sandbox_id(), EGRESS_PORT)
            self._client = AsyncEgressClient.from_endpoint(endpoint, **self._options)
        return self._client

    async def get(self) -> PolicyStatusResponse:
        """The policy in force, its derived mode and how it is enforced (`enforcement_mode`, `reason`)."""
        client = await self.client()
        return await client.get_policy()

    async def patch(self, rules: Sequence[NetworkRule | Mapping[str, Any]]) -> PolicyStatusResponse:
        """Put `rules` ahead of the current ones (the first rule per target wins); new connections see it.

        sandbox.egress.patch([{"action": "allow", "target": "*.pypi.org"}])
        """
        client = await self.client()
        return await client.patch_policy(rules)

    async def replace(self, policy: NetworkPolicy | Mapping[str, Any] | None) -> PolicyStatusResponse:
        """Replace the whole policy; None denies everything.

        sandbox.egress.replace({"defaultAction": "deny", "egress": [{"action": "allow", "target": "x.org"}]})
        """
        client = await self.client()
        return await client.replace_policy(policy)

    async def remove(self, targets: Sequence[str]) -> PolicyStatusResponse:
        """Remove the rules for these targets (unknown ones are ignored).

        sandbox.egress.remove(["pypi.org"])
        """
        client = await self.client()
        return await client.delete_policy_rules(targets)

    # -- credential vault ----------------------------------------------------------------------------

    async def vault(self) -> CredentialVaultState:
        """The Credential Vault: its revision, credentials and bindings, never a credential's value
        (`NotFoundError` while the sandbox has none)."""
        client = await self.client()
        return await client.get_credential_vault()

    async def set_credential(
        self, name: str, value: str, *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Store `value` as the credential `name` (added or replaced; the vault created if need be).

        sandbox.egress.set_credential("gh", os.environ["GITHUB_TOKEN"])
        """
        client = await self.client()
        return await client.set_credential(name, value, expected_revision=expected_revision)

    async def set_binding(
        self, binding: CredentialBinding | Mapping[str, Any], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Add the binding or replace the one of its name; in force for the sandbox's next request.

        sandbox.egress.set_binding({"name": "gh-api", "match": {"hosts": ["api.github.com"]},
                                    "auth": {"type": "bearer", "credential": "gh"}})
        """
        client = await self.client()
        return await client.set_binding(binding, expected_revision=expected_revision)

    async def remove_credentials(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these credentials (a binding that names one must go first: `ConflictError`)."""
        client = await self.client()
        return await client.remove_credentials(names, expected_revision=expected_revision)

    async def remove_bindings(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these bindings: their headers are no longer set from the next request on."""
        client = await self.client()
        return await client.remove_bindings(names, expected_revision=expected_revision)

    async def delete_vault(self) -> None:
        """Delete the vault, its credentials and bindings."""
        client = await self.client()
        await client.delete_credential_vault()

    async def aclose(self) -> None:
        """Close the egress client, if one was opened."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
