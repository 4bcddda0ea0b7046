"""The egress sidecar client (`egress-api.yaml`): runtime network policy and the Credential Vault.

The sidecar runs inside each sandbox (port 18080). Reach it through the endpoint the lifecycle API
resolves, whose headers carry the `OPENSANDBOX-EGRESS-AUTH` token:

    endpoint = lifecycle.get_endpoint(sandbox.id, 18080)
    egress = EgressClient.from_endpoint(endpoint)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Unpack

from ._async.client import AsyncAPIClient
from ._base_client import BaseClient, ClientOptions
from ._operation import APIRequest, given, model, no_content, operation, path
from ._sync.client import SyncAPIClient
from .models.egress import (
    Credential,
    CredentialBinding,
    CredentialBindingListResponse,
    CredentialBindingMetadata,
    CredentialBindingMutationSet,
    CredentialListResponse,
    CredentialMetadata,
    CredentialMutationSet,
    CredentialVaultCreateRequest,
    CredentialVaultMutationRequest,
    CredentialVaultState,
    DeletePolicyRulesRequest,
    NetworkRule,
    PatchPolicyRulesRequest,
    PolicyStatusResponse,
)

__all__ = ["AsyncEgressClient", "EgressClient", "EgressOperations"]

_VAULT = "/credential-vault"


class EgressOperations(BaseClient):
    """The egress operations, shared by `EgressClient` and `AsyncEgressClient`."""

    _auth_header: ClassVar[str] = "OPENSANDBOX-EGRESS-AUTH"

    def __init__(
        self, base_url: str, auth_token: str | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        """`base_url` is the sidecar's address; `auth_token` goes in `OPENSANDBOX-EGRESS-AUTH`.

        Options: `timeout`, `max_retries`, `headers`, `http_client` (see `BaseClient`). Prefer
        `from_endpoint`, which adds the scheme and forwards the endpoint's headers.
        """
        super().__init__(base_url, auth_token, **options)

    # -- policy ------------------------------------------------------------------------------------

    @operation
    def get_policy(self) -> APIRequest[PolicyStatusResponse]:
        """The policy in force and the sidecar's mode (`GET /policy`)."""
        return APIRequest("GET", "/policy", parse=model(PolicyStatusResponse))

    @operation
    def patch_policy(
        self, rules: Sequence[NetworkRule | Mapping[str, Any]]
    ) -> APIRequest[PolicyStatusResponse]:
        """Merge `rules` ahead of the current ones (`PATCH /policy`); the first rule per target wins.

        egress.patch_policy([NetworkRule(action="allow", target="pypi.org")])
        """
        body = PatchPolicyRulesRequest.model_validate(list(rules)).to_wire()
        return APIRequest("PATCH", "/policy", json=body, parse=model(PolicyStatusResponse))

    @operation
    def delete_policy_rules(self, targets: Sequence[str]) -> APIRequest[PolicyStatusResponse]:
        """Remove the rules for these targets (`DELETE /policy`); unknown targets are ignored.

        egress.delete_policy_rules(["pypi.org", "*.example.com"])
        """
        if isinstance(targets, str):
            targets = [targets]
        body = DeletePolicyRulesRequest.model_validate(list(targets)).to_wire()
        return APIRequest("DELETE", "/policy", json=body, parse=model(PolicyStatusResponse))

    # -- credential vault --------------------------------------------------------------------------

    @operation
    def create_credential_vault(
        self,
        request: CredentialVaultCreateRequest | None = None,
        *,
        credentials: Sequence[Credential | Mapping[str, Any]] = (),
        bindings: Sequence[CredentialBinding | Mapping[str, Any]] = (),
    ) -> APIRequest[CredentialVaultState]:
        """Create the sandbox's Credential Vault (`POST /credential-vault`, 201).

        Credential values are write-only: the answer describes them without their values.

            egress.create_credential_vault(
                credentials=[Credential(name="gh", source=InlineCredentialSource(value=token))],
                bindings=[CredentialBinding(name="gh-api", match=CredentialMatch(hosts=["api.github.com"]),
                                            auth=BearerCredentialAuth(credential="gh"))],
            )
        """
        if request is None:
            request = CredentialVaultCreateRequest.model_validate(
                {"credentials": list(credentials), "bindings": list(bindings)}
            )
        elif credentials or bindings:
            raise TypeError("create_credential_vault: pass a request or keyword arguments, not both")
        return APIRequest("POST", _VAULT, json=request.to_wire(), parse=model(CredentialVaultState))

    @operation
    def get_credential_vault(self) -> APIRequest[CredentialVaultState]:
        """The vault's sanitized state: revision, credential and binding metadata, no secrets."""
        return APIRequest("GET", _VAULT, parse=model(CredentialVaultState))

    @operation
    def patch_credential_vault(
        self,
        request: CredentialVaultMutationRequest | None = None,
        *,
        expected_revision: int | None = None,
        credentials: CredentialMutationSet | Mapping[str, Any] | None = None,
        bindings: CredentialBindingMutationSet | Mapping[str, Any] | None = None,
    ) -> APIRequest[CredentialVaultState]:
        """Atomically add, replace and delete credentials and bindings (`PATCH /credential-vault`).

        `expected_revision` makes the change fail with `ConflictError` if someone changed the vault
        since that revision.

            state = egress.get_credential_vault()
            egress.patch_credential_vault(expected_revision=state.revision,
                                          bindings={"delete": ["gh-api"]})
        """
        fields = given(expected_revision=expected_revision, credentials=credentials, bindings=bindings)
        if request is None:
            request = CredentialVaultMutationRequest.model_validate(fields)
        elif fields:
            raise TypeError("patch_credential_vault: pass a request or keyword arguments, not both")
        return APIRequest("PATCH", _VAULT, json=request.to_wire(), parse=model(CredentialVaultState))

    @operation
    def delete_credential_vault(self) -> APIRequest[None]:
        """Delete the vault and every credential in it (`DELETE /credential-vault`, 204)."""
        return APIRequest("DELETE", _VAULT, parse=no_content)

    @operation
    def list_credentials(self) -> APIRequest[CredentialListResponse]:
        """Metadata of every credential in the vault (never their values)."""
        return APIRequest("GET", f"{_VAULT}/credentials", parse=model(CredentialListResponse))

    @operation
    def get_credential(self, name: str) -> APIRequest[CredentialMetadata]:
        """Metadata of one credential; the name is percent-encoded into the path."""
        return APIRequest(
            "GET", path(_VAULT + "/credentials/{name}", name=name), parse=model(CredentialMetadata)
        )

    @operation
    def list_bindings(self) -> APIRequest[CredentialBindingListResponse]:
        """Metadata of every binding in the vault."""
        return APIRequest("GET", f"{_VAULT}/bindings", parse=model(CredentialBindingListResponse))

    @operation
    def get_binding(self, name: str) -> APIRequest[CredentialBindingMetadata]:
        """Metadata of one binding; the name is percent-encoded into the path."""
        return APIRequest(
            "GET", path(_VAULT + "/bindings/{name}", name=name), parse=model(CredentialBindingMetadata)
        )


class EgressClient(EgressOperations, SyncAPIClient):
    """Blocking client of a sandbox's egress sidecar.

    from osbox import EgressClient, LifecycleClient

    endpoint = LifecycleClient().get_endpoint(sandbox_id, 18080)
    with EgressClient.from_endpoint(endpoint) as egress:
        print(egress.get_policy().mode)
        egress.patch_policy([{"action": "allow", "target": "pypi.org"}])
    """


class AsyncEgressClient(EgressOperations, AsyncAPIClient):
    """Asyncio client of a sandbox's egress sidecar; same operations as `EgressClient`, awaited.

    async with AsyncEgressClient.from_endpoint(endpoint) as egress:
        await egress.delete_policy_rules(["pypi.org"])
    """
