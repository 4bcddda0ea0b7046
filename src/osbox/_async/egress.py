"""`AsyncEgressClient`: the egress sidecar (`egress-api.yaml`): network policy and the Credential Vault.

The sidecar runs inside each sandbox (port 18080). Reach it through the endpoint the lifecycle API
resolves, whose headers carry the `OPENSANDBOX-EGRESS-AUTH` token:

    endpoint = lifecycle.get_endpoint(sandbox.id, 18080)
    egress = AsyncEgressClient.from_endpoint(endpoint)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Unpack

from .._base_client import ClientOptions
from .._exceptions import ConflictError, NotFoundError
from .._operation import APIRequest, given, model, no_content, path
from ..models.egress import (
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
    NetworkPolicy,
    NetworkRule,
    PatchPolicyRulesRequest,
    PolicyStatusResponse,
)
from .client import AsyncAPIClient

__all__ = ["AsyncEgressClient"]

_VAULT = "/credential-vault"
_Kind = Literal["credentials", "bindings"]


class AsyncEgressClient(AsyncAPIClient):
    """Client of a sandbox's egress sidecar: runtime network policy and the Credential Vault.

    from osbox import AsyncEgressClient, AsyncLifecycleClient

    endpoint = await AsyncLifecycleClient().get_endpoint(sandbox_id, 18080)
    async with AsyncEgressClient.from_endpoint(endpoint) as egress:
        policy = await egress.get_policy()
        await egress.patch_policy([{"action": "allow", "target": "pypi.org"}])
    """

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

    async def get_policy(self) -> PolicyStatusResponse:
        """The policy in force and the sidecar's mode (`GET /policy`)."""
        return await self._call(APIRequest("GET", "/policy", parse=model(PolicyStatusResponse)))

    async def replace_policy(
        self, policy: NetworkPolicy | Mapping[str, Any] | None = None
    ) -> PolicyStatusResponse:
        """Replace the whole policy (`POST /policy`); None (an empty body) means deny everything.

        egress.replace_policy({"defaultAction": "deny", "egress": [{"action": "allow", "target": "x.org"}]})
        """
        body = None if policy is None else NetworkPolicy.model_validate(policy).to_wire()
        return await self._call(APIRequest("POST", "/policy", json=body, parse=model(PolicyStatusResponse)))

    async def patch_policy(self, rules: Sequence[NetworkRule | Mapping[str, Any]]) -> PolicyStatusResponse:
        """Merge `rules` ahead of the current ones (`PATCH /policy`); the first rule per target wins.

        egress.patch_policy([NetworkRule(action="allow", target="pypi.org")])
        """
        body = PatchPolicyRulesRequest.model_validate(list(rules)).to_wire()
        return await self._call(APIRequest("PATCH", "/policy", json=body, parse=model(PolicyStatusResponse)))

    async def delete_policy_rules(self, targets: Sequence[str]) -> PolicyStatusResponse:
        """Remove the rules for these targets (`DELETE /policy`); unknown targets are ignored.

        egress.delete_policy_rules(["pypi.org", "*.example.com"])
        """
        if isinstance(targets, str):
            targets = [targets]
        body = DeletePolicyRulesRequest.model_validate(list(targets)).to_wire()
        return await self._call(APIRequest("DELETE", "/policy", json=body, parse=model(PolicyStatusResponse)))

    # -- credential vault --------------------------------------------------------------------------

    async def create_credential_vault(
        self,
        request: CredentialVaultCreateRequest | None = None,
        *,
        credentials: Sequence[Credential | Mapping[str, Any]] = (),
        bindings: Sequence[CredentialBinding | Mapping[str, Any]] = (),
    ) -> CredentialVaultState:
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
        return await self._call(
            APIRequest("POST", _VAULT, json=request.to_wire(), parse=model(CredentialVaultState))
        )

    async def get_credential_vault(self) -> CredentialVaultState:
        """The vault's sanitized state: revision, credential and binding metadata, no secrets."""
        return await self._call(APIRequest("GET", _VAULT, parse=model(CredentialVaultState)))

    async def patch_credential_vault(
        self,
        request: CredentialVaultMutationRequest | None = None,
        *,
        expected_revision: int | None = None,
        credentials: CredentialMutationSet | Mapping[str, Any] | None = None,
        bindings: CredentialBindingMutationSet | Mapping[str, Any] | None = None,
    ) -> CredentialVaultState:
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
        return await self._call(
            APIRequest("PATCH", _VAULT, json=request.to_wire(), parse=model(CredentialVaultState))
        )

    async def delete_credential_vault(self) -> None:
        """Delete the vault and every credential in it (`DELETE /credential-vault`, 204)."""
        return await self._call(APIRequest("DELETE", _VAULT, parse=no_content))

    async def list_credentials(self) -> CredentialListResponse:
        """Metadata of every credential in the vault (never their values)."""
        return await self._call(
            APIRequest("GET", f"{_VAULT}/credentials", parse=model(CredentialListResponse))
        )

    async def get_credential(self, name: str) -> CredentialMetadata:
        """Metadata of one credential; the name is percent-encoded into the path."""
        return await self._call(
            APIRequest(
                "GET", path(_VAULT + "/credentials/{name}", name=name), parse=model(CredentialMetadata)
            )
        )

    async def list_bindings(self) -> CredentialBindingListResponse:
        """Metadata of every binding in the vault."""
        return await self._call(
            APIRequest("GET", f"{_VAULT}/bindings", parse=model(CredentialBindingListResponse))
        )

    async def get_binding(self, name: str) -> CredentialBindingMetadata:
        """Metadata of one binding; the name is percent-encoded into the path."""
        return await self._call(
            APIRequest(
                "GET", path(_VAULT + "/bindings/{name}", name=name), parse=model(CredentialBindingMetadata)
            )
        )

    # -- credential vault, by name -------------------------------------------------------------------

    async def set_credential(
        self, name: str, value: str, *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Store `value` as the credential `name`: added, or replacing the one of that name; the vault
        is created when the sandbox has none. The value is write-only: no answer ever holds it.

            egress.set_credential("gh", os.environ["GITHUB_TOKEN"])

        Without `expected_revision` the change is guarded by the revision read first, so a concurrent
        change makes it fail with `ConflictError` rather than be lost.
        """
        credential = Credential.model_validate({"name": name, "source": {"type": "inline", "value": value}})
        return await self._put("credentials", credential, expected_revision)

    async def set_binding(
        self, binding: CredentialBinding | Mapping[str, Any], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Add the binding, or replace the one of its name (the vault is created when there is none).

        egress.set_binding({"name": "gh-api", "match": {"hosts": ["api.github.com"]},
                            "auth": {"type": "bearer", "credential": "gh"}})
        """
        return await self._put("bindings", CredentialBinding.model_validate(binding), expected_revision)

    async def remove_credentials(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these credentials (404 `NotFoundError` for one the vault does not hold; 409
        `ConflictError` while a binding still names one)."""
        return await self.patch_credential_vault(
            expected_revision=expected_revision, credentials={"delete": _names(names)}
        )

    async def remove_bindings(
        self, names: Sequence[str], *, expected_revision: int | None = None
    ) -> CredentialVaultState:
        """Delete these bindings: their headers are no longer set from the next request on."""
        return await self.patch_credential_vault(
            expected_revision=expected_revision, bindings={"delete": _names(names)}
        )

    async def _put(
        self,
        kind: Literal["credentials", "bindings"],
        item: Credential | CredentialBinding,
        revision: int | None,
    ) -> CredentialVaultState:
        """`item` into the vault's `kind`: POST when there is no vault, else PATCH add or replace."""
        try:
            state = await self.get_credential_vault()
        except NotFoundError:
            if revision is not None:
                raise
            try:
                created = {"credentials": [], "bindings": [], kind: [item]}
                return await self.create_credential_vault(
                    CredentialVaultCreateRequest.model_validate(created)
                )
            except ConflictError:  # created meanwhile: change it as below
                state = await self.get_credential_vault()
        held = {entry.name for entry in getattr(state, kind)}
        change = {"replace" if item.name in held else "add": [item]}
        expected = state.revision if revision is None else revision
        request = {"expected_revision": expected, kind: change}
        return await self.patch_credential_vault(CredentialVaultMutationRequest.model_validate(request))


def _names(names: Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)
