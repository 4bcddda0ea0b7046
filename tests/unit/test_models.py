"""Tests of the wire models (`osbox.models`): round trips, tolerance, unset vs null, secrets, fold rules,
and a walk over every schema of the four OpenAPI documents."""

from __future__ import annotations

import functools
import inspect
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator
from pydantic import BaseModel, ValidationError

import osbox.models as models
from osbox.models import (
    ApiKeyCredentialAuth,
    BearerCredentialAuth,
    CommandStatusResponse,
    CreateSandboxRequest,
    CredentialBinding,
    CredentialVaultCreateRequest,
    Endpoint,
    EventType,
    Execution,
    ExecutionBuilder,
    FileInfo,
    FileInfoMap,
    ImageAuth,
    ImageSpec,
    InlineCredentialSource,
    NetworkPolicy,
    NetworkRule,
    PatchPolicyRulesRequest,
    PatchSandboxMetadataRequest,
    Permission,
    PermissionMap,
    RenewSandboxExpirationRequest,
    RunCommandRequest,
    Sandbox,
    SandboxState,
    Snapshot,
    SnapshotState,
    SnapshotStatus,
    StreamErrorBody,
    StreamEvent,
    Volume,
    fold,
    mode_from_wire,
    mode_to_wire,
    parse_stream_object,
)

SPEC_FILES = {
    "lifecycle": "sandbox-lifecycle.yml",
    "diagnostic": "diagnostic-api.yml",
    "execd": "execd-api.yaml",
    "egress": "egress-api.yaml",
}

# Spec schema -> osbox.models name, where they differ.
SCHEMA_NAME_MAP = {"ServerStreamEvent": "StreamEvent"}
# Schemas that are type aliases (no model class): only their presence is checked.
TYPE_ALIAS_SCHEMAS = {"ResourceLimits", "CredentialAuth"}
# Fields the spec requires that a model deliberately defaults, to tolerate servers that omit them
# (or, for discriminators, to fill in the only possible value).
TOLERATED_DEFAULTS = {
    ("Sandbox", "entrypoint"),
    ("CreateSandboxResponse", "entrypoint"),
    ("ErrorResponse", "message"),
    ("CodeContext", "language"),
    ("Permission", "mode"),
    ("InlineCredentialSource", "type"),
    ("BearerCredentialAuth", "type"),
    ("BasicCredentialAuth", "type"),
    ("ApiKeyCredentialAuth", "type"),
    ("CustomHeadersCredentialAuth", "type"),
}
# Fields a model requires that the spec leaves optional.
EXTRA_REQUIRED = {("ServerStreamEvent", "type")}

T0 = "2025-11-16T14:30:45Z"


def _specs_dir() -> Path:
    if env := os.environ.get("OSBOX_SPECS_DIR"):
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "specs"


@functools.cache
def _load_spec(api: str) -> dict[str, Any]:
    path = _specs_dir() / SPEC_FILES[api]
    if not path.exists():
        pytest.skip(f"OpenAPI spec {path} not found (set OSBOX_SPECS_DIR); spec checks skipped")
    with path.open() as f:
        spec: dict[str, Any] = yaml.safe_load(f)
    return spec


def _honour_nullable(node: Any) -> Any:
    """The documents say OpenAPI 3.1 but some schemas use 3.0's ``nullable``: express it in 3.1 terms."""
    if isinstance(node, list):
        return [_honour_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _honour_nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _components(api: str) -> dict[str, Any]:
    components: dict[str, Any] = _honour_nullable(_load_spec(api)["components"])
    return components


def _assert_valid(api: str, schema_name: str, payload: Any) -> None:
    """Validate a payload against a named component schema of a spec."""
    components = _components(api)
    validator = OAS31Validator({"$ref": f"#/components/schemas/{schema_name}", "components": components})
    validator.validate(payload)


def _wire_names(model: type[BaseModel]) -> dict[str, bool]:
    """Wire name -> required, for every field of a model."""
    return {(f.alias or name): f.is_required() for name, f in model.model_fields.items()}


# --- round trips --------------------------------------------------------------------------------------------

SANDBOX = {
    "id": "sbx-1",
    "image": {"uri": "python:3.11"},
    "platform": {"os": "linux", "arch": "amd64"},
    "status": {"state": "Running", "reason": "started", "message": "ok", "lastTransitionAt": T0},
    "metadata": {"team": "ml"},
    "entrypoint": ["sleep", "infinity"],
    "expiresAt": "2025-11-16T15:30:45Z",
    "createdAt": T0,
}
SNAPSHOT = {
    "id": "snap-1",
    "sandboxId": "sbx-1",
    "name": "before-import",
    "status": {"state": "Ready", "reason": "snapshot_ready", "lastTransitionAt": T0},
    "createdAt": T0,
}
PAGINATION = {"page": 1, "pageSize": 20, "totalItems": 1, "totalPages": 1, "hasNextPage": False}
FILE_INFO = {
    "path": "/workspace/a.txt",
    "type": "file",
    "size": 12,
    "modified_at": T0,
    "created_at": T0,
    "owner": "root",
    "group": "root",
    "mode": 644,
}
BINDINGS = [
    {"name": "b1", "match": {"hosts": ["api.example.com"]}, "auth": {"type": "bearer", "credential": "tok"}},
    {
        "name": "b2",
        "match": {"hosts": ["x.io"], "ports": [8443]},
        "auth": {"type": "basic", "credential": "c"},
    },
    {
        "name": "b3",
        "match": {"schemes": ["https"], "hosts": ["y.io"], "methods": ["GET"], "paths": ["/v1/*"]},
        "auth": {"type": "apiKey", "name": "X-Api-Key", "credential": "k"},
    },
    {
        "name": "b4",
        "match": {"hosts": ["z.io"]},
        "auth": {"type": "customHeaders", "headers": [{"name": "X-A", "credential": "a"}]},
    },
]

ROUND_TRIPS: list[tuple[str, str, str, Any]] = [
    # (api, spec schema, osbox.models name, payload)
    (
        "lifecycle",
        "CreateSandboxRequest",
        "CreateSandboxRequest",
        {
            "image": {"uri": "registry.local/app:1", "auth": {"username": "u", "password": "pw"}},
            "platform": {"os": "linux", "arch": "arm64"},
            "timeout": 600,
            "resourceLimits": {"cpu": "500m", "memory": "512Mi"},
            "env": {"DEBUG": "1"},
            "metadata": {"project": "p"},
            "entrypoint": ["python", "/app/main.py"],
            "networkPolicy": {"defaultAction": "deny", "egress": [{"action": "allow", "target": "pypi.org"}]},
            "credentialProxy": {"enabled": True},
            "secureAccess": False,
            "volumes": [
                {"name": "data", "host": {"path": "/srv/data"}, "mountPath": "/data", "readOnly": True},
                {
                    "name": "cache",
                    "pvc": {
                        "claimName": "cache",
                        "createIfNotExists": False,
                        "deleteOnSandboxTermination": True,
                        "storageClass": None,
                        "storage": "1Gi",
                        "accessModes": ["ReadWriteOnce"],
                    },
                    "mountPath": "/cache",
                    "subPath": "a/b",
                },
                {
                    "name": "oss",
                    "ossfs": {
                        "bucket": "bkt",
                        "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                        "version": "1.0",
                        "options": ["allow_other"],
                        "accessKeyId": "id",
                        "accessKeySecret": "secret",
                    },
                    "mountPath": "/oss",
                },
            ],
            "extensions": {"storage.id": "x"},
        },
    ),
    ("lifecycle", "CreateSandboxRequest", "CreateSandboxRequest", {"snapshotId": "snap-1", "timeout": None}),
    (
        "lifecycle",
        "CreateSandboxResponse",
        "CreateSandboxResponse",
        {"id": "sbx-1", "status": {"state": "Pending"}, "createdAt": T0, "entrypoint": ["sh"]},
    ),
    ("lifecycle", "Sandbox", "Sandbox", SANDBOX),
    (
        "lifecycle",
        "ListSandboxesResponse",
        "ListSandboxesResponse",
        {"items": [SANDBOX], "pagination": PAGINATION},
    ),
    ("lifecycle", "Snapshot", "Snapshot", SNAPSHOT),
    (
        "lifecycle",
        "ListSnapshotsResponse",
        "ListSnapshotsResponse",
        {"items": [SNAPSHOT], "pagination": PAGINATION},
    ),
    ("lifecycle", "CreateSnapshotRequest", "CreateSnapshotRequest", {"name": "checkpoint"}),
    ("lifecycle", "PatchSandboxMetadataRequest", "PatchSandboxMetadataRequest", {"a": "1", "b": None}),
    ("lifecycle", "RenewSandboxExpirationRequest", "RenewSandboxExpirationRequest", {"expiresAt": T0}),
    ("lifecycle", "RenewSandboxExpirationResponse", "RenewSandboxExpirationResponse", {"expiresAt": T0}),
    (
        "lifecycle",
        "ErrorResponse",
        "ErrorResponse",
        {"code": "SANDBOX::NOT_FOUND", "message": "no such sandbox"},
    ),
    (
        "lifecycle",
        "Endpoint",
        "Endpoint",
        {"endpoint": "127.0.0.1:8080/sandboxes/s/proxy/44772", "headers": {"X-EXECD-ACCESS-TOKEN": "t"}},
    ),
    (
        "diagnostic",
        "DiagnosticContentResponse",
        "DiagnosticContentResponse",
        {
            "sandboxId": "sbx",
            "kind": "logs",
            "scope": "container",
            "delivery": "inline",
            "contentType": "text/plain; charset=utf-8",
            "content": "started\n",
            "truncated": False,
            "warnings": ["partial"],
        },
    ),
    (
        "diagnostic",
        "DiagnosticContentResponse",
        "DiagnosticContentResponse",
        {
            "sandboxId": "sbx",
            "kind": "events",
            "scope": "runtime",
            "delivery": "url",
            "contentType": "text/plain; charset=utf-8",
            "contentUrl": "https://example.com/e.txt",
            "contentLength": 5,
            "expiresAt": T0,
            "truncated": True,
        },
    ),
    ("execd", "CreateSessionRequest", "CreateSessionRequest", {"cwd": "/workspace"}),
    ("execd", "CreateSessionResponse", "CreateSessionResponse", {"session_id": "s-1"}),
    ("execd", "RunInSessionRequest", "RunInSessionRequest", {"command": "echo hi", "cwd": "/", "timeout": 0}),
    ("execd", "CodeContextRequest", "CodeContextRequest", {"language": "python"}),
    ("execd", "CodeContext", "CodeContext", {"id": "ctx", "language": "python"}),
    (
        "execd",
        "RunCodeRequest",
        "RunCodeRequest",
        {"code": "1+1", "context": {"id": "c", "language": "python"}},
    ),
    (
        "execd",
        "RunCommandRequest",
        "RunCommandRequest",
        {
            "command": "ls",
            "cwd": "/",
            "background": True,
            "timeout": 1000,
            "uid": 1000,
            "gid": 1000,
            "envs": {"A": "b"},
        },
    ),
    (
        "execd",
        "CommandStatusResponse",
        "CommandStatusResponse",
        {
            "id": "c1",
            "content": "ls",
            "running": False,
            "exit_code": 0,
            "started_at": T0,
            "finished_at": "2025-11-16T14:30:46Z",
        },
    ),
    (
        "execd",
        "CommandStatusResponse",
        "CommandStatusResponse",
        {"id": "c1", "running": True, "exit_code": None, "started_at": T0, "finished_at": None},
    ),
    (
        "execd",
        "ServerStreamEvent",
        "StreamEvent",
        {"type": "stdout", "text": "hi", "timestamp": 1700000000000},
    ),
    (
        "execd",
        "ServerStreamEvent",
        "StreamEvent",
        {"type": "result", "results": {"text": "4", "image/png": "iVBOR", "text/html": "<b>4</b>"}},
    ),
    (
        "execd",
        "ServerStreamEvent",
        "StreamEvent",
        {"type": "error", "error": {"ename": "NameError", "evalue": "x", "traceback": ["a", "b"]}},
    ),
    ("execd", "ServerStreamEvent", "StreamEvent", {"type": "execution_complete", "execution_time": 150}),
    ("execd", "ServerStreamEvent", "StreamEvent", {"type": "execution_count", "execution_count": 3}),
    ("execd", "FileInfo", "FileInfo", FILE_INFO),
    ("execd", "Permission", "Permission", {"owner": "root", "group": "root", "mode": 755}),
    ("execd", "FileMetadata", "FileMetadata", {"path": "/w/u.txt", "owner": "a", "group": "a", "mode": 600}),
    ("execd", "RenameFileItem", "RenameFileItem", {"src": "/a", "dest": "/b"}),
    ("execd", "ReplaceFileContentItem", "ReplaceFileContentItem", {"old": "localhost", "new": "0.0.0.0"}),
    ("execd", "ReplaceFileContentResult", "ReplaceFileContentResult", {"replacedCount": 2}),
    (
        "execd",
        "Metrics",
        "Metrics",
        {
            "cpu_count": 4.0,
            "cpu_used_pct": 45.5,
            "mem_total_mib": 8192.0,
            "mem_used_mib": 4096.0,
            "timestamp": 17,
        },
    ),
    ("execd", "ErrorResponse", "ErrorResponse", {"code": "FILE_NOT_FOUND", "message": "file not found"}),
    (
        "egress",
        "PolicyStatusResponse",
        "PolicyStatusResponse",
        {
            "status": "ok",
            "mode": "enforcing",
            "enforcementMode": "dns+nft",
            "policy": {"defaultAction": "deny", "egress": [{"action": "allow", "target": "*.pypi.org"}]},
        },
    ),
    (
        "egress",
        "CredentialVaultCreateRequest",
        "CredentialVaultCreateRequest",
        {
            "credentials": [{"name": "tok", "source": {"type": "inline", "value": "s3cr3t"}}],
            "bindings": BINDINGS,
        },
    ),
    (
        "egress",
        "CredentialVaultMutationRequest",
        "CredentialVaultMutationRequest",
        {
            "expectedRevision": 3,
            "credentials": {
                "add": [{"name": "n", "source": {"type": "inline", "value": "v"}}],
                "replace": [],
                "delete": ["old"],
            },
            "bindings": {"add": BINDINGS[:1], "delete": ["b9"]},
        },
    ),
    (
        "egress",
        "CredentialVaultState",
        "CredentialVaultState",
        {
            "revision": 4,
            "credentials": [{"name": "tok", "sourceType": "inline", "revision": 4}],
            "bindings": [
                {
                    "name": "b3",
                    "revision": 4,
                    "match": {"hosts": ["y.io"]},
                    "auth": {"type": "apiKey", "name": "X-Api-Key"},
                }
            ],
        },
    ),
    (
        "egress",
        "CredentialListResponse",
        "CredentialListResponse",
        {"revision": 1, "credentials": [{"name": "a", "sourceType": "inline", "revision": 1}]},
    ),
    (
        "egress",
        "CredentialBindingListResponse",
        "CredentialBindingListResponse",
        {"revision": 1, "bindings": [{"name": "b", "revision": 1}]},
    ),
]


@pytest.mark.parametrize(
    ("api", "schema", "model_name", "payload"),
    ROUND_TRIPS,
    ids=[f"{case[1]}-{i}" for i, case in enumerate(ROUND_TRIPS)],
)
def test_round_trip_is_faithful_and_spec_valid(api: str, schema: str, model_name: str, payload: Any) -> None:
    model = getattr(models, model_name)
    parsed = model.from_wire(payload)
    assert parsed.to_wire() == payload
    _assert_valid(api, schema, parsed.to_wire())


def test_wire_names_map_to_snake_case_attributes() -> None:
    sandbox = Sandbox.from_wire(SANDBOX)
    assert sandbox.status.state is SandboxState.RUNNING
    assert sandbox.status.last_transition_at == datetime(2025, 11, 16, 14, 30, 45, tzinfo=UTC)
    assert sandbox.expires_at is not None and sandbox.expires_at.tzinfo is UTC
    info = FileInfo.from_wire(FILE_INFO)
    assert info.modified_at.year == 2025 and info.mode == 644 and info.type == "file"
    # Attribute names are accepted on input too.
    status = SnapshotStatus(state=SnapshotState.READY)
    snapshot = Snapshot(id="s", sandbox_id="x", status=status, created_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert snapshot.to_wire()["sandboxId"] == "x"


def test_root_model_bodies_round_trip() -> None:
    info_map = FileInfoMap.from_wire({"/a": FILE_INFO})
    assert info_map.root["/a"].size == 12
    assert info_map.to_wire() == {"/a": FILE_INFO}
    perms = PermissionMap({"/a": Permission(mode=mode_to_wire(0o700))})
    assert perms.to_wire() == {"/a": {"mode": 700}}
    rules = PatchPolicyRulesRequest([NetworkRule(action="deny", target="bad.example.com")])
    assert rules.to_wire() == [{"action": "deny", "target": "bad.example.com"}]
    with pytest.raises(ValidationError):
        PatchPolicyRulesRequest([])


# --- tolerance ----------------------------------------------------------------------------------------------


def test_unknown_fields_are_kept_and_sent_back() -> None:
    payload = {**SANDBOX, "futureField": {"x": 1}, "status": {"state": "Running", "progress": 0.5}}
    sandbox = Sandbox.from_wire(payload)
    assert sandbox.model_extra == {"futureField": {"x": 1}}
    assert sandbox.status.model_extra == {"progress": 0.5}
    assert sandbox.to_wire() == payload


def test_unknown_states_validate_and_round_trip() -> None:
    sandbox = Sandbox.from_wire({**SANDBOX, "status": {"state": "Hibernating"}})
    state = sandbox.status.state
    assert state == "Hibernating"
    assert isinstance(state, SandboxState)
    assert not state.is_known()
    assert SandboxState.PAUSED.is_known()
    assert sandbox.to_wire()["status"] == {"state": "Hibernating"}
    assert SnapshotState("Archived") == "Archived"
    assert SandboxState("Running") is SandboxState.RUNNING
    assert not SandboxState("RUNNING").is_known()  # a member's name is not a known value
    with pytest.raises(ValidationError):
        Sandbox.from_wire({**SANDBOX, "status": {"state": 3}})


def test_extra_request_fields_are_sent() -> None:
    request = CreateSandboxRequest(snapshot_id="s", futureOption=True)  # type: ignore[call-arg]
    assert request.to_wire() == {"snapshotId": "s", "futureOption": True}


# --- unset vs null ------------------------------------------------------------------------------------------


def test_unset_fields_are_omitted_and_explicit_none_is_null() -> None:
    assert "timeout" not in CreateSandboxRequest(snapshot_id="s").to_wire()
    assert CreateSandboxRequest(snapshot_id="s", timeout=None).to_wire() == {
        "snapshotId": "s",
        "timeout": None,
    }
    assert CreateSandboxRequest(snapshot_id="s", timeout=60).to_wire()["timeout"] == 60


def test_unset_vs_null_holds_in_nested_models() -> None:
    request = CreateSandboxRequest(snapshot_id="s", network_policy=NetworkPolicy(default_action=None))
    assert request.to_wire()["networkPolicy"] == {"defaultAction": None}
    parsed = CreateSandboxRequest.from_wire({"snapshotId": "s", "networkPolicy": {"egress": []}})
    assert parsed.to_wire()["networkPolicy"] == {"egress": []}
    assert CommandStatusResponse(id="c").to_wire() == {"id": "c"}


def test_patch_metadata_keeps_null_for_deletion() -> None:
    patch = PatchSandboxMetadataRequest({"keep": "v", "drop": None})
    assert patch.to_wire() == {"keep": "v", "drop": None}
    with pytest.raises(ValidationError):
        PatchSandboxMetadataRequest({"n": 1})  # type: ignore[dict-item]


def test_discriminator_type_is_always_sent() -> None:
    assert BearerCredentialAuth(credential="tok").to_wire() == {"type": "bearer", "credential": "tok"}
    assert InlineCredentialSource(value="v").to_wire() == {"type": "inline", "value": "v"}
    binding = CredentialBinding.from_wire(BINDINGS[2])
    assert isinstance(binding.auth, ApiKeyCredentialAuth)
    assert binding.auth.name == "X-Api-Key"
    with pytest.raises(ValidationError):
        CredentialBinding.from_wire({**BINDINGS[0], "auth": {"type": "oauth", "credential": "x"}})


# --- request validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"snapshotId": "s", "timeout": 59}, "greater than or equal to 60"),
        ({"image": {"uri": "x"}, "snapshotId": "s", "entrypoint": ["a"]}, "not both"),
        ({"image": {"uri": "x"}}, "entrypoint is required"),
        ({}, "one of image or snapshotId"),
        ({"snapshotId": "s", "extensions": {"poolRef": "p"}}, "poolRef"),
        ({"image": {"uri": "x"}, "entrypoint": []}, "at least 1"),
        (
            {"snapshotId": "s", "volumes": [{"name": "v", "mountPath": "/v"}]},
            "one backend (host, pvc or ossfs) is required",
        ),
        (
            {
                "snapshotId": "s",
                "volumes": [
                    {"name": "v", "mountPath": "/v", "host": {"path": "/h"}, "pvc": {"claimName": "c"}}
                ],
            },
            "exactly one backend",
        ),
        (
            {"snapshotId": "s", "volumes": [{"name": "Bad Name", "mountPath": "/v", "host": {"path": "/h"}}]},
            "pattern",
        ),
        ({"snapshotId": "s", "platform": {"os": "plan9", "arch": "amd64"}}, "linux"),
    ],
)
def test_create_sandbox_request_rejects_bad_input(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        CreateSandboxRequest.from_wire(payload)


def test_pool_mode_needs_neither_image_nor_entrypoint() -> None:
    request = CreateSandboxRequest.from_wire({"extensions": {"poolRef": "pool-a"}})
    assert request.to_wire() == {"extensions": {"poolRef": "pool-a"}}


def test_volume_with_an_unknown_backend_is_accepted() -> None:
    volume = Volume.from_wire({"name": "v", "mountPath": "/v", "nfs": {"server": "n"}})
    assert volume.to_wire() == {"name": "v", "mountPath": "/v", "nfs": {"server": "n"}}


def test_request_assignments_are_validated() -> None:
    request = CreateSandboxRequest(snapshot_id="s")
    with pytest.raises(ValidationError):
        request.timeout = 10
    request.timeout = 120
    assert request.to_wire() == {"snapshotId": "s", "timeout": 120}


def test_run_command_gid_requires_uid() -> None:
    with pytest.raises(ValidationError, match="gid requires uid"):
        RunCommandRequest(command="id", gid=10)
    assert RunCommandRequest(command="id").to_wire() == {"command": "id"}


# --- secrets ------------------------------------------------------------------------------------------------

SECRET = "hunter2-do-not-log"


def _secret_holders() -> list[BaseModel]:
    return [
        ImageAuth(username="u", password=SECRET),
        CreateSandboxRequest(
            image=ImageSpec(uri="x", auth=ImageAuth(password=SECRET)), entrypoint=["a"], env={"TOKEN": SECRET}
        ),
        CreateSandboxRequest.from_wire(
            {
                "snapshotId": "s",
                "volumes": [
                    {
                        "name": "o",
                        "mountPath": "/o",
                        "ossfs": {
                            "bucket": "bkt",
                            "endpoint": "e",
                            "accessKeyId": "i",
                            "accessKeySecret": SECRET,
                        },
                    }
                ],
            }
        ),
        Endpoint(endpoint="h:1", headers={"X-EXECD-ACCESS-TOKEN": SECRET}),
        RunCommandRequest(command="env", envs={"TOKEN": SECRET}),
        CredentialVaultCreateRequest.from_wire(
            {"credentials": [{"name": "c", "source": {"type": "inline", "value": SECRET}}], "bindings": []}
        ),
    ]


@pytest.mark.parametrize("holder", _secret_holders(), ids=lambda m: type(m).__name__)
def test_secrets_stay_out_of_repr_but_reach_the_wire(holder: BaseModel) -> None:
    assert SECRET not in repr(holder)
    assert SECRET not in str(holder)
    assert SECRET in str(holder.to_wire())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (ImageSpec, {"uri": "x", "auth": {"password": [SECRET]}}),
        (InlineCredentialSource, {"type": "inline", "value": [SECRET]}),
        (RunCommandRequest, {"command": "x", "envs": {"A": [SECRET]}}),
        (CreateSandboxRequest, {"snapshotId": "s", "env": {"A": [SECRET]}}),
    ],
)
def test_secrets_stay_out_of_validation_errors(model: type[BaseModel], payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    assert SECRET not in str(caught.value)


# --- datetimes ----------------------------------------------------------------------------------------------


def test_datetimes_are_utc_and_serialized_with_z() -> None:
    naive = RenewSandboxExpirationRequest(expires_at=datetime(2030, 1, 2, 3, 4, 5))
    assert naive.to_wire() == {"expiresAt": "2030-01-02T03:04:05Z"}
    offset = RenewSandboxExpirationRequest.from_wire({"expiresAt": "2030-01-02T05:04:05+02:00"})
    assert offset.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert offset.to_wire() == {"expiresAt": "2030-01-02T03:04:05Z"}
    aware = RenewSandboxExpirationRequest(
        expires_at=datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-1)))
    )
    assert aware.to_wire() == {"expiresAt": "2030-01-01T01:00:00Z"}


# --- file modes ---------------------------------------------------------------------------------------------


def test_mode_helpers_convert_between_octal_and_decimal_digits() -> None:
    assert mode_to_wire(0o755) == 755
    assert mode_from_wire(755) == 0o755
    assert mode_to_wire(0o4755) == 4755
    assert mode_to_wire(0) == 0 and mode_from_wire(0) == 0
    assert mode_from_wire(FileInfo.from_wire(FILE_INFO).mode) == 0o644


@pytest.mark.parametrize("bad", [789, 18, -1, 17777])
def test_mode_from_wire_rejects_non_octal_digits(bad: int) -> None:
    with pytest.raises(ValueError, match="file mode"):
        mode_from_wire(bad)


@pytest.mark.parametrize("bad", [-1, 0o10000])
def test_mode_to_wire_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="file mode"):
        mode_to_wire(bad)


@given(st.integers(min_value=0, max_value=0o7777))
def test_mode_helpers_round_trip(mode: int) -> None:
    assert mode_from_wire(mode_to_wire(mode)) == mode


# --- stream events and fold ---------------------------------------------------------------------------------


def _events(*objects: dict[str, Any]) -> list[StreamEvent | StreamErrorBody]:
    return [parse_stream_object(o) for o in objects]


def test_fold_command_lines_rebuild_the_text() -> None:
    execution = fold(
        _events(
            {"type": "init", "text": "a" * 32},
            {"type": "stdout", "text": "first"},
            {"type": "stdout", "text": "\n"},
            {"type": "stderr", "text": "warn"},
            {"type": "ping", "text": "pong"},
            {"type": "stdout", "text": "last"},
            {"type": "execution_complete", "execution_time": 12},
        )
    )
    assert execution == Execution(
        id="a" * 32, stdout="first\n\nlast\n", stderr="warn\n", exit_code=0, duration_ms=12, complete=True
    )


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n")), min_size=1))
def test_fold_rebuilds_any_line_split_output(lines: list[str]) -> None:
    # execd sends each line without its newline, and an empty line as "\n".
    events = [StreamEvent(type="stdout", text=line or "\n") for line in lines]
    assert fold(events).stdout == "".join(line + "\n" for line in lines)


def test_fold_jupyter_chunks_are_verbatim() -> None:
    events = _events(
        {"type": "stdout", "text": "a\nb"},
        {"type": "stdout", "text": "c\n"},
        {"type": "stdout", "text": "d"},
        {"type": "execution_complete", "execution_time": 1},
    )
    assert fold(events, chunks=True).stdout == "a\nbc\nd"
    # Without chunks=True a newline-free chunk is taken for a command line.
    assert fold(events).stdout == "a\nbc\nd\n"


def test_fold_command_exit_codes() -> None:
    failed = fold(
        _events(
            {"type": "init", "text": "id"},
            {
                "type": "error",
                "error": {"ename": "CommandExecError", "evalue": "3", "traceback": ["exit status 3"]},
            },
        )
    )
    assert failed.exit_code == 3 and failed.complete
    assert failed.error is not None and failed.error.traceback == ["exit status 3"]
    killed = fold(_events({"type": "error", "error": {"ename": "CommandExecError", "evalue": "-1"}}))
    assert killed.exit_code == -1
    odd = fold(_events({"type": "error", "error": {"ename": "CommandExecError", "evalue": "boom"}}))
    assert odd.exit_code == 1


def test_fold_jupyter_error_then_complete_keeps_the_error() -> None:
    execution = fold(
        _events(
            {"type": "init", "text": "ctx"},
            {"type": "status", "text": "error"},
            {
                "type": "error",
                "error": {"ename": "NameError", "evalue": "name 'x' is not defined", "traceback": []},
            },
            {"type": "execution_complete", "execution_time": 5},
        ),
        chunks=True,
    )
    assert execution.exit_code == 1
    assert execution.error is not None and execution.error.ename == "NameError"
    assert execution.duration_ms == 5 and execution.complete


def test_fold_results_keep_every_mime_type() -> None:
    bundle = {
        "text": "<Figure>",
        "image/png": "iVBORw0KGgo=",
        "text/html": "<img>",
        "application/json": {"a": 1},
    }
    execution = fold(
        _events(
            {"type": "execution_count", "execution_count": 7},
            {"type": "result", "results": bundle},
            {"type": "result", "results": {"text": "2"}},
            {"type": "some_future_event", "text": "ignored"},
            {"type": "execution_complete"},
        )
    )
    assert execution.results == [bundle, {"text": "2"}]
    assert execution.execution_count == 7 and execution.exit_code == 0


def test_trailing_error_body_without_type() -> None:
    objects = _events({"type": "init", "text": "s"}, {"code": "RUNTIME_ERROR", "message": "session is busy"})
    assert isinstance(objects[1], StreamErrorBody)
    execution = fold(objects)
    assert execution.error is not None
    assert (execution.error.ename, execution.error.evalue) == ("RUNTIME_ERROR", "session is busy")
    assert execution.exit_code is None and not execution.complete


def test_builder_folds_one_event_at_a_time() -> None:
    builder = ExecutionBuilder()
    builder.add(StreamEvent(type=EventType.INIT, text="id"))
    builder.add(StreamEvent(type=EventType.STDOUT, text="x"))
    partial = builder.result()
    assert (partial.stdout, partial.exit_code, partial.complete) == ("x\n", None, False)
    builder.add(StreamEvent(type=EventType.EXECUTION_COMPLETE, execution_time=3))
    assert builder.result().exit_code == 0
    assert partial.exit_code is None  # earlier results are snapshots


def test_stream_event_keeps_unknown_fields() -> None:
    event = StreamEvent.from_wire({"type": "stdout", "text": "x", "seq": 4})
    assert event.to_wire() == {"type": "stdout", "text": "x", "seq": 4}


# --- the specs ----------------------------------------------------------------------------------------------


def test_all_exports_resolve() -> None:
    for name in models.__all__:
        assert getattr(models, name) is not None, name


@pytest.mark.parametrize("api", sorted(SPEC_FILES))
def test_every_spec_schema_has_a_matching_model(api: str) -> None:
    spec = _load_spec(api)
    problems: list[str] = []
    for schema_name, schema in spec["components"]["schemas"].items():
        model_name = SCHEMA_NAME_MAP.get(schema_name, schema_name)
        model = getattr(models, model_name, None)
        if model is None:
            problems.append(f"{api}: no model for schema {schema_name}")
            continue
        if schema_name in TYPE_ALIAS_SCHEMAS or not isinstance(model, type):
            continue
        if model is models.StreamEvent:
            # A slotted class for speed, not a pydantic model: its constructor parameters are the fields.
            fields = set(inspect.signature(models.StreamEvent).parameters) - {"extra"}
            problems.extend(
                f"{api}: StreamEvent lacks wire field {prop!r}"
                for prop in schema.get("properties", {})
                if prop not in fields
            )
            continue
        if not issubclass(model, BaseModel):
            # Open enums stand for string schemas.
            assert schema.get("type") == "string", schema_name
            continue
        properties = schema.get("properties", {})
        if not properties:
            continue
        wire = _wire_names(model)
        required = set(schema.get("required", []))
        for prop in properties:
            if prop not in wire:
                problems.append(f"{api}: {model_name} lacks wire field {prop!r}")
            elif prop in required and not wire[prop] and (schema_name, prop) not in TOLERATED_DEFAULTS:
                problems.append(f"{api}: {model_name}.{prop} is required by the spec but defaulted")
        for name, is_required in wire.items():
            if is_required and name not in required and (schema_name, name) not in EXTRA_REQUIRED:
                problems.append(f"{api}: {model_name}.{name} is required but optional in the spec")
    assert not problems, "\n".join(problems)
