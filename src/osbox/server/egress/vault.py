"""The Credential Vault of one sandbox (`egress-api.yaml` `/credential-vault`): credentials and bindings
kept encrypted at rest, values never returned.

Storage: one file (`<state dir>/vault.bin`, 0600, the server's own dir), AES-256-GCM with a key derived
per sandbox from the server's 0600 key (`tokens.py`); the sandbox id is the associated data, so a file
copied to another sandbox does not decrypt. Reads answer metadata only (name, source type, revision;
a binding's match and auth type).

Bindings say where a credential goes (hosts, schemes, ports, methods, paths) and how (bearer, basic,
apiKey header, custom headers). `rules()` compiles them, secrets filled in, for the credential proxy
(`credential_proxy.py`), which injects them. A sandbox without the proxy (no `credentialProxy.enabled`
at create, no network, no image) refuses bindings with 412 `PRECONDITION_FAILED` saying why, rather
than storing rules that would silently never apply; credentials alone are stored and managed anyway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CredentialVault", "VaultError"]

_FILE = "vault.bin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_CREDENTIALS = 256
_MAX_VALUE = 64 * 1024
_MAX_BINDINGS = 256
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")  # an HTTP header name (the spec's pattern)
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}\.?")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_AUTH_FIELDS = {
    "bearer": {"type", "credential"},
    "basic": {"type", "credential"},
    "apiKey": {"type", "name", "credential"},
    "customHeaders": {"type", "headers"},
}


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


@dataclass
class _Binding:
    name: str
    match: dict[str, Any]  # every field, defaults filled in
    auth: dict[str, Any]  # as given (validated): names credentials, holds no secret
    revision: int

    def credentials(self) -> list[str]:
        """The credentials this binding names."""
        if self.auth["type"] == "customHeaders":
            return [h["credential"] for h in self.auth["headers"]]
        return [self.auth["credential"]]


@dataclass
class _Contents:
    revision: int
    credentials: dict[str, _Credential]
    bindings: dict[str, _Binding]


class CredentialVault:
    """One sandbox's vault: `create`, `state`, `mutate`, `delete`, `rules`; every read is sanitized.

    vault = CredentialVault(state_dir, key, sandbox_id)
    vault.create({"credentials": [{"name": "gh", "source": {"type": "inline", "value": token}}],
                  "bindings": [{"name": "gh", "match": {"hosts": ["api.github.com"]},
                                "auth": {"type": "bearer", "credential": "gh"}}]})
    """

    def __init__(
        self, state_dir: Path, key: bytes, sandbox_id: str, *, bindings_refused: str | None = None
    ) -> None:
        """`key`: 32 bytes for this sandbox alone; `sandbox_id` binds the file to it;
        `bindings_refused`: why this sandbox can have no bindings (None: it can)."""
        self._path = state_dir / _FILE
        self._aead = AESGCM(key)
        self._aad = sandbox_id.encode()
        self._bindings_refused = bindings_refused

    # -- operations ---------------------------------------------------------------------------------

    def create(self, body: object) -> dict[str, Any]:
        """`POST /credential-vault`: 409 when one exists."""
        request = _object(body, {"credentials", "bindings"}, "request")
        missing = [key for key in ("credentials", "bindings") if key not in request]
        if missing:  # both required by the spec, even when empty
            raise VaultError(400, "INVALID_REQUEST", f"request: {' and '.join(missing)} required (may be [])")
        if self._load() is not None:
            raise VaultError(409, "CONFLICT", "the credential vault exists already; PATCH or DELETE it")
        contents = _Contents(1, {}, {})
        for item in _list(request.get("credentials"), "credentials"):
            credential = _credential(item, revision=1)
            if credential.name in contents.credentials:
                raise VaultError(400, "INVALID_REQUEST", f"credential {credential.name!r} is given twice")
            contents.credentials[credential.name] = credential
        for item in self._bindings(request.get("bindings"), "bindings"):
            binding = _binding(item, revision=1)
            if binding.name in contents.bindings:
                raise VaultError(400, "INVALID_REQUEST", f"binding {binding.name!r} is given twice")
            contents.bindings[binding.name] = binding
        self._save(_checked(contents))
        return _state(contents)

    def state(self) -> dict[str, Any]:
        """`GET /credential-vault`: the sanitized state; 404 without a vault."""
        return _state(self._existing())

    def mutate(self, body: object) -> dict[str, Any]:
        """`PATCH /credential-vault`: add, replace, delete atomically; 409 on a stale `expectedRevision`."""
        request = _object(body, {"expectedRevision", "credentials", "bindings"}, "request")
        current = self._existing()
        expected = request.get("expectedRevision")
        if expected is not None and type(expected) is not int:
            raise VaultError(400, "INVALID_REQUEST", "expectedRevision must be an integer")
        if expected is not None and expected != current.revision:
            raise VaultError(
                409, "CONFLICT", f"the vault is at revision {current.revision}, not {expected!r}"
            )
        revision = current.revision + 1
        updated = _Contents(revision, dict(current.credentials), dict(current.bindings))
        if request.get("credentials") is not None:
            changes = _object(request["credentials"], {"add", "replace", "delete"}, "credentials")
            _apply(
                updated.credentials,
                [_credential(i, revision) for i in _list(changes.get("add"), "credentials.add")],
                [_credential(i, revision) for i in _list(changes.get("replace"), "credentials.replace")],
                _list(changes.get("delete"), "credentials.delete"),
                "credential",
            )
        if request.get("bindings") is not None:
            changes = _object(request["bindings"], {"add", "replace", "delete"}, "bindings")
            added = self._bindings(changes.get("add"), "bindings.add")
            replaced = self._bindings(changes.get("replace"), "bindings.replace")
            _apply(
                updated.bindings,
                [_binding(i, revision) for i in added],
                [_binding(i, revision) for i in replaced],
                _list(changes.get("delete"), "bindings.delete"),
                "binding",
            )
        self._save(_checked(updated))
        return _state(updated)

    def delete(self) -> None:
        """`DELETE /credential-vault`: 404 without a vault."""
        self._existing()
        self._path.unlink(missing_ok=True)

    def credential(self, name: str) -> dict[str, Any]:
        """Metadata of one credential; 404 when there is none of that name."""
        credentials = self._existing().credentials
        if name not in credentials:
            raise VaultError(404, "NOT_FOUND", f"no credential {name!r}")
        return _metadata(credentials[name])

    def binding(self, name: str) -> dict[str, Any]:
        """Metadata of one binding; 404 when there is none of that name."""
        bindings = self._existing().bindings
        if name not in bindings:
            raise VaultError(404, "NOT_FOUND", f"no binding {name!r}")
        return _binding_metadata(bindings[name])

    def rules(self) -> list[dict[str, Any]]:
        """The bindings compiled for the credential proxy, secrets filled in ([] without a vault):
        hosts (lower case), schemes, ports, methods, paths, and the headers to set as [name, value]."""
        contents = self._load()
        if contents is None:
            return []
        rules = []
        for binding in contents.bindings.values():
            rules.append({**binding.match, "headers": _headers(binding.auth, contents.credentials)})
        return rules

    # -- storage ------------------------------------------------------------------------------------

    def _bindings(self, value: object, where: str) -> list[Any]:
        items = _list(value, where)
        if items and self._bindings_refused is not None:
            raise VaultError(412, "PRECONDITION_FAILED", self._bindings_refused)
        return items

    def _existing(self) -> _Contents:
        loaded = self._load()
        if loaded is None:
            raise VaultError(404, "NOT_FOUND", "this sandbox has no credential vault (POST one first)")
        return loaded

    def _load(self) -> _Contents | None:
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
        bindings = {
            b["name"]: _Binding(b["name"], b["match"], b["auth"], b["revision"])
            for b in doc.get("bindings", [])
        }
        return _Contents(int(doc["revision"]), credentials, bindings)

    def _save(self, contents: _Contents) -> None:
        doc = {
            "revision": contents.revision,
            "credentials": [
                {"name": c.name, "value": c.value, "revision": c.revision}
                for c in contents.credentials.values()
            ],
            "bindings": [
                {"name": b.name, "match": b.match, "auth": b.auth, "revision": b.revision}
                for b in contents.bindings.values()
            ],
        }
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, json.dumps(doc).encode(), self._aad)
        temp = self._path.with_name(f".{_FILE}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(sealed)
        os.replace(temp, self._path)


def _apply(
    items: dict[str, Any], added: list[Any], replaced: list[Any], deleted: list[Any], kind: str
) -> None:
    """One PATCH's changes to credentials or bindings (`kind`), each checked against what is there."""
    for item in added:
        if item.name in items:
            raise VaultError(409, "CONFLICT", f"{kind} {item.name!r} exists; replace it")
        items[item.name] = item
    for item in replaced:
        if item.name not in items:
            raise VaultError(404, "NOT_FOUND", f"no {kind} {item.name!r} to replace")
        items[item.name] = item
    for name in deleted:
        if not isinstance(name, str) or items.pop(name, None) is None:
            raise VaultError(404, "NOT_FOUND", f"no {kind} {name!r} to delete")


def _checked(contents: _Contents) -> _Contents:
    """`contents` when it holds together: within the caps, every binding naming a credential it has."""
    if len(contents.credentials) > _MAX_CREDENTIALS:
        raise VaultError(400, "INVALID_REQUEST", f"at most {_MAX_CREDENTIALS} credentials")
    if len(contents.bindings) > _MAX_BINDINGS:
        raise VaultError(400, "INVALID_REQUEST", f"at most {_MAX_BINDINGS} bindings")
    for binding in contents.bindings.values():
        for name in binding.credentials():
            if name not in contents.credentials:
                raise VaultError(
                    409,
                    "CONFLICT",
                    f"binding {binding.name!r} names credential {name!r}, which the vault does not hold",
                )
    return contents


def _state(contents: _Contents) -> dict[str, Any]:
    return {
        "revision": contents.revision,
        "credentials": [_metadata(c) for c in contents.credentials.values()],
        "bindings": [_binding_metadata(b) for b in contents.bindings.values()],
    }


def _metadata(credential: _Credential) -> dict[str, Any]:
    return {"name": credential.name, "sourceType": "inline", "revision": credential.revision}


def _binding_metadata(binding: _Binding) -> dict[str, Any]:
    auth = {"type": binding.auth["type"]}
    if binding.auth["type"] == "apiKey":
        auth["name"] = binding.auth["name"]
    return {"name": binding.name, "revision": binding.revision, "match": binding.match, "auth": auth}


def _credential(item: object, revision: int) -> _Credential:
    credential = _object(item, {"name", "source"}, "credential")
    name = _name(credential.get("name"), "credential")
    source = _object(credential.get("source"), {"type", "value"}, f"credential {name!r}: source")
    value = source.get("value")
    if source.get("type") != "inline" or not isinstance(value, str) or not value:
        raise VaultError(400, "INVALID_REQUEST", f"credential {name!r}: source must be inline with a value")
    if len(value) > _MAX_VALUE:
        raise VaultError(400, "INVALID_REQUEST", f"credential {name!r}: value over {_MAX_VALUE} characters")
    if any(c in value for c in "\r\n\0"):
        raise VaultError(
            400, "INVALID_REQUEST", f"credential {name!r}: a header value cannot hold CR, LF or NUL"
        )
    return _Credential(name, value, revision)


def _name(value: object, kind: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise VaultError(400, "INVALID_REQUEST", f"{kind} name: 1-128 letters, digits, '.', '_' or '-'")
    return value


def _binding(item: object, revision: int) -> _Binding:
    binding = _object(item, {"name", "match", "auth"}, "binding")
    name = _name(binding.get("name"), "binding")
    where = f"binding {name!r}"
    match = _object(
        binding.get("match"), {"schemes", "ports", "hosts", "methods", "paths"}, f"{where}: match"
    )
    hosts = _strings(match.get("hosts"), f"{where}: match.hosts", default=None)
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise VaultError(400, "INVALID_REQUEST", f"{where}: {host!r} is not a host name or *.domain")
    schemes = _strings(match.get("schemes"), f"{where}: match.schemes", default=["https"])
    if not set(schemes) <= {"https", "http"}:
        raise VaultError(400, "INVALID_REQUEST", f"{where}: match.schemes may hold https and http only")
    ports = match.get("ports", [443])
    if (
        not isinstance(ports, list)
        or not ports
        or any(type(p) is not int or not 0 < p < 65536 for p in ports)
    ):
        raise VaultError(400, "INVALID_REQUEST", f"{where}: match.ports must be a non-empty array of ports")
    methods = [m.upper() for m in _strings(match.get("methods"), f"{where}: match.methods", default=_METHODS)]
    paths = _strings(match.get("paths"), f"{where}: match.paths", default=["/*"])
    if not all(p.startswith("/") for p in paths):
        raise VaultError(400, "INVALID_REQUEST", f"{where}: match.paths must start with '/'")
    compiled = {
        "hosts": [h.lower().rstrip(".") for h in hosts],
        "schemes": schemes,
        "ports": ports,
        "methods": methods,
        "paths": paths,
    }
    return _Binding(name, compiled, _auth(binding.get("auth"), where), revision)


def _auth(value: object, where: str) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in _AUTH_FIELDS:
        raise VaultError(
            400, "INVALID_REQUEST", f"{where}: auth.type must be one of {', '.join(_AUTH_FIELDS)}"
        )
    auth = _object(value, _AUTH_FIELDS[kind], f"{where}: auth")
    entries = auth.get("headers") if kind == "customHeaders" else [auth]
    if not isinstance(entries, list) or not entries:
        raise VaultError(400, "INVALID_REQUEST", f"{where}: auth.headers must be a non-empty array")
    for entry in entries:
        fields = {"name", "credential"} if kind == "customHeaders" else _AUTH_FIELDS[kind]
        entry = _object(entry, fields, f"{where}: auth")
        if not isinstance(entry.get("credential"), str):
            raise VaultError(400, "INVALID_REQUEST", f"{where}: auth names no credential")
        if "name" in fields - {"type"} and not (
            isinstance(entry.get("name"), str) and _TOKEN.fullmatch(entry["name"])
        ):
            raise VaultError(400, "INVALID_REQUEST", f"{where}: auth header name must be an HTTP token")
    return auth


def _headers(auth: dict[str, Any], credentials: dict[str, _Credential]) -> list[list[str]]:
    kind = auth["type"]
    if kind == "bearer":
        return [["Authorization", f"Bearer {credentials[auth['credential']].value}"]]
    if kind == "basic":
        return [["Authorization", f"Basic {credentials[auth['credential']].value}"]]
    if kind == "apiKey":
        return [[auth["name"], credentials[auth["credential"]].value]]
    return [[h["name"], credentials[h["credential"]].value] for h in auth["headers"]]


def _strings(value: object, where: str, *, default: Sequence[str] | None) -> list[str]:
    if value is None and default is not None:
        return list(default)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise VaultError(400, "INVALID_REQUEST", f"{where} must be a non-empty array of strings")
    return value


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
