"""The Credential Vault of one sandbox (`egress-api.yaml` `/credential-vault`): credentials kept encrypted
at rest, never returned; bindings refused with 501.

Storage: one file (`<state dir>/vault.bin`, 0600, the server's own dir), AES-256-GCM with a key derived
per sandbox from the server's 0600 key (`tokens.py`); the sandbox id is the associated data, so a file
copied to another sandbox does not decrypt. Reads answer metadata only (name, source type, revision).

Injection is not done: putting a credential into a sandbox's HTTPS requests needs a proxy that
terminates TLS with a CA the sandbox trusts (a MITM stack), which osbox serve does not run. So bindings
(the rules saying where to inject) are refused with 501 `NOT_SUPPORTED` rather than stored and silently
never applied; credentials alone are stored and managed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["INJECTION_UNSUPPORTED", "CredentialVault", "VaultError"]

INJECTION_UNSUPPORTED = (
    "credential injection is not supported by osbox serve: injecting into HTTPS requests needs a "
    "TLS-terminating proxy (a MITM CA in the sandbox), which it does not run; store credentials only "
    "(no bindings)"
)
_FILE = "vault.bin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_CREDENTIALS = 256
_MAX_VALUE = 64 * 1024


class VaultError(Exception):
    """A request the vault refuses: `status` (400, 404, 409, 501), `code` and a message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class _Credential:
    name: str
    value: str
    revision: int


class CredentialVault:
    """One sandbox's vault: `create`, `state`, `mutate`, `delete`; every read is sanitized.

    vault = CredentialVault(state_dir, key, sandbox_id)
    vault.create({"credentials": [{"name": "gh", "source": {"type": "inline", "value": token}}],
                  "bindings": []})
    """

    def __init__(self, state_dir: Path, key: bytes, sandbox_id: str) -> None:
        """`key`: 32 bytes for this sandbox alone; `sandbox_id` binds the file to it."""
        self._path = state_dir / _FILE
        self._aead = AESGCM(key)
        self._aad = sandbox_id.encode()

    # -- operations ---------------------------------------------------------------------------------

    def create(self, body: object) -> dict[str, Any]:
        """`POST /credential-vault`: 409 when one exists."""
        request = _object(body, {"credentials", "bindings"}, "request")
        if self._load() is not None:
            raise VaultError(409, "CONFLICT", "the credential vault exists already; PATCH or DELETE it")
        _refuse_bindings(request.get("bindings"), "bindings")
        credentials: dict[str, _Credential] = {}
        for item in _list(request.get("credentials"), "credentials"):
            credential = _credential(item, revision=1)
            if credential.name in credentials:
                raise VaultError(400, "INVALID_REQUEST", f"credential {credential.name!r} is given twice")
            credentials[credential.name] = credential
        self._save(1, credentials)
        return _state(1, credentials)

    def state(self) -> dict[str, Any]:
        """`GET /credential-vault`: the sanitized state; 404 without a vault."""
        revision, credentials = self._existing()
        return _state(revision, credentials)

    def mutate(self, body: object) -> dict[str, Any]:
        """`PATCH /credential-vault`: add, replace, delete atomically; 409 on a stale `expectedRevision`."""
        request = _object(body, {"expectedRevision", "credentials", "bindings"}, "request")
        revision, credentials = self._existing()
        expected = request.get("expectedRevision")
        if expected is not None and (type(expected) is not int or expected != revision):
            raise VaultError(409, "CONFLICT", f"the vault is at revision {revision}, not {expected!r}")
        bindings = request.get("bindings")
        if bindings is not None:
            changes = _object(bindings, {"add", "replace", "delete"}, "bindings")
            _refuse_bindings(changes.get("add"), "bindings.add")
            _refuse_bindings(changes.get("replace"), "bindings.replace")
            for name in _list(changes.get("delete"), "bindings.delete"):
                raise VaultError(404, "NOT_FOUND", f"no binding {name!r}")
        new_revision = revision + 1
        updated = dict(credentials)
        if request.get("credentials") is not None:
            changes = _object(request["credentials"], {"add", "replace", "delete"}, "credentials")
            for item in _list(changes.get("add"), "credentials.add"):
                credential = _credential(item, new_revision)
                if credential.name in updated:
                    raise VaultError(409, "CONFLICT", f"credential {credential.name!r} exists; replace it")
                updated[credential.name] = credential
            for item in _list(changes.get("replace"), "credentials.replace"):
                credential = _credential(item, new_revision)
                if credential.name not in updated:
                    raise VaultError(404, "NOT_FOUND", f"no credential {credential.name!r} to replace")
                updated[credential.name] = credential
            for name in _list(changes.get("delete"), "credentials.delete"):
                if not isinstance(name, str) or updated.pop(name, None) is None:
                    raise VaultError(404, "NOT_FOUND", f"no credential {name!r} to delete")
        if len(updated) > _MAX_CREDENTIALS:
            raise VaultError(400, "INVALID_REQUEST", f"at most {_MAX_CREDENTIALS} credentials")
        self._save(new_revision, updated)
        return _state(new_revision, updated)

    def delete(self) -> None:
        """`DELETE /credential-vault`: 404 without a vault."""
        self._existing()
        self._path.unlink(missing_ok=True)

    def credential(self, name: str) -> dict[str, Any]:
        """Metadata of one credential; 404 when there is none of that name."""
        _, credentials = self._existing()
        if name not in credentials:
            raise VaultError(404, "NOT_FOUND", f"no credential {name!r}")
        return _metadata(credentials[name])

    def revision(self) -> int:
        """The vault's revision; 404 without a vault."""
        return self._existing()[0]

    # -- storage ------------------------------------------------------------------------------------

    def _existing(self) -> tuple[int, dict[str, _Credential]]:
        loaded = self._load()
        if loaded is None:
            raise VaultError(404, "NOT_FOUND", "this sandbox has no credential vault (POST one first)")
        return loaded

    def _load(self) -> tuple[int, dict[str, _Credential]] | None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as sealed:
            data = sealed.read()
        try:
            doc = json.loads(self._aead.decrypt(data[:12], data[12:], self._aad))
        except (InvalidTag, ValueError) as exc:
            raise VaultError(
                500, "INTERNAL_ERROR", "the stored credential vault cannot be decrypted"
            ) from exc
        credentials = {
            c["name"]: _Credential(c["name"], c["value"], c["revision"]) for c in doc["credentials"]
        }
        return int(doc["revision"]), credentials

    def _save(self, revision: int, credentials: dict[str, _Credential]) -> None:
        doc = {
            "revision": revision,
            "credentials": [
                {"name": c.name, "value": c.value, "revision": c.revision} for c in credentials.values()
            ],
        }
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, json.dumps(doc).encode(), self._aad)
        temp = self._path.with_name(f".{_FILE}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(sealed)
        os.replace(temp, self._path)


def _state(revision: int, credentials: dict[str, _Credential]) -> dict[str, Any]:
    return {"revision": revision, "credentials": [_metadata(c) for c in credentials.values()], "bindings": []}


def _metadata(credential: _Credential) -> dict[str, Any]:
    return {"name": credential.name, "sourceType": "inline", "revision": credential.revision}


def _credential(item: object, revision: int) -> _Credential:
    credential = _object(item, {"name", "source"}, "credential")
    name = credential.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VaultError(400, "INVALID_REQUEST", "credential name: 1-128 letters, digits, '.', '_' or '-'")
    source = _object(credential.get("source"), {"type", "value"}, f"credential {name!r}: source")
    value = source.get("value")
    if source.get("type") != "inline" or not isinstance(value, str) or not value:
        raise VaultError(400, "INVALID_REQUEST", f"credential {name!r}: source must be inline with a value")
    if len(value) > _MAX_VALUE:
        raise VaultError(400, "INVALID_REQUEST", f"credential {name!r}: value over {_MAX_VALUE} characters")
    return _Credential(name, value, revision)


def _refuse_bindings(value: object, where: str) -> None:
    if _list(value, where):
        raise VaultError(501, "NOT_SUPPORTED", INJECTION_UNSUPPORTED)


def _object(value: object, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VaultError(400, "INVALID_REQUEST", f"{where} must be a JSON object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise VaultError(400, "INVALID_REQUEST", f"{where}: unknown field(s) {', '.join(unknown)}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise VaultError(400, "INVALID_REQUEST", f"{where} must be an array")
    return value
