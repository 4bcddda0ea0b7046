"""Schemathesis throws spec-shaped and malformed requests at a real `osbox serve`: it never answers 5xx.

Every lifecycle and diagnostics operation is fuzzed against the live server (creating real sandboxes,
which the server removes on exit), and the execd file and directory operations against a sandbox
reached through the proxy. A 5xx, a crash or an answer that breaks the spec's response schema fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from osbox.server import LocalServer
from tests.spec_check import specs_dir

from .server_fixtures import API_KEY, lifecycle_client, requires_runtime

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = requires_runtime

_SPECS = specs_dir()
if not (_SPECS / "sandbox-lifecycle.yml").exists():
    pytest.skip(f"OpenAPI specs not found in {_SPECS}; API fuzzing skipped", allow_module_level=True)

LIFECYCLE = schemathesis.openapi.from_path(str(_SPECS / "sandbox-lifecycle.yml"))
DIAGNOSTIC = schemathesis.openapi.from_path(str(_SPECS / "diagnostic-api.yml"))
# Commands and code cells would run arbitrary generated shell; files and directories are the
# operations where hostile paths and bodies matter most.
EXECD = schemathesis.openapi.from_path(str(_SPECS / "execd-api.yaml")).include(
    path_regex=r"^/(files|directories|metrics$|ping$)"
)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def execd_endpoint(server: LocalServer) -> tuple[str, dict[str, str]]:
    with lifecycle_client(server) as api:
        created = api.post(
            "/sandboxes",
            json={"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"], "timeout": 600},
        ).json()
        endpoint: dict[str, Any] = api.get(f"/sandboxes/{created['id']}/endpoints/44772").json()
    return "http://" + endpoint["endpoint"], endpoint.get("headers", {})


@LIFECYCLE.parametrize()
@FUZZ
def test_lifecycle_never_fails_on_generated_requests(case: Any, server: LocalServer) -> None:
    case.call_and_validate(
        base_url=server.base_url + "/v1", headers={"OPEN-SANDBOX-API-KEY": API_KEY}, checks=CHECKS
    )


@DIAGNOSTIC.parametrize()
@FUZZ
def test_diagnostics_never_fail_on_generated_requests(case: Any, server: LocalServer) -> None:
    case.call_and_validate(
        base_url=server.base_url + "/v1", headers={"OPEN-SANDBOX-API-KEY": API_KEY}, checks=CHECKS
    )


@EXECD.parametrize()
@FUZZ
def test_execd_files_never_fail_on_generated_requests(
    case: Any, execd_endpoint: tuple[str, dict[str, str]]
) -> None:
    base_url, headers = execd_endpoint
    case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error])
