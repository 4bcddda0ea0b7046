"""Schemathesis throws spec-shaped and malformed requests at a real `osbox serve`: it never answers 5xx.

All four OpenAPI documents are fuzzed against one live server, for a fixed budget (`FUZZ`):
- lifecycle and diagnostics at `/v1` (creating real sandboxes, which the server removes on exit);
- execd, every operation but the endless `/metrics/watch` stream, against a sandbox reached through
  the proxy, as clients reach it — commands (timeouts capped by `_bounded`) and code cells run for real;
- egress through the proxy's egress port.

A 5xx or a crash fails; lifecycle and diagnostics answers must also match the spec's schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from osbox._wire import EGRESS_PORT
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
# `/metrics/watch` streams a sample every second until the client leaves: no answer to check.
EXECD = schemathesis.openapi.from_path(str(_SPECS / "execd-api.yaml")).exclude(path="/metrics/watch")
EGRESS = schemathesis.openapi.from_path(str(_SPECS / "egress-api.yaml"))
#: The budget: ~55 operations x 50 examples (and the coverage phase) take about a minute on 2 cores.
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
#: Generated commands and session runs get at most this timeout (ms), so a command that happens to
#: wait forever (`cat`, `yes`) cannot stall the run; invalid timeouts are sent as generated.
COMMAND_TIMEOUT_MS = 5000
#: Where a 501 NOT_SUPPORTED is the documented answer (see `not_a_server_error_but_not_supported`).
_NOT_SUPPORTED_PATHS = ("/policy", "/credential-vault", "/code")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


def _endpoint(server: LocalServer, port: int) -> tuple[str, dict[str, str]]:
    with lifecycle_client(server) as api:
        created = api.post(
            "/sandboxes",
            json={"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"], "timeout": 600},
        ).json()
        endpoint: dict[str, Any] = api.get(f"/sandboxes/{created['id']}/endpoints/{port}").json()
    return "http://" + endpoint["endpoint"], endpoint.get("headers", {})


@pytest.fixture(scope="module")
def execd_endpoint(server: LocalServer) -> tuple[str, dict[str, str]]:
    return _endpoint(server, 44772)


@pytest.fixture(scope="module")
def egress_endpoint(server: LocalServer) -> tuple[str, dict[str, str]]:
    return _endpoint(server, EGRESS_PORT)


def _bounded(case: Any) -> Any:
    """`case` with a generated command's, session run's or code cell's valid timeout capped at
    COMMAND_TIMEOUT_MS (a cell's `timeout` is osbox's extension; a `bash` cell may run `yes`)."""
    body = case.body
    if isinstance(body, dict) and ("command" in body or "code" in body):
        timeout = body.get("timeout")
        unbounded = timeout is None or timeout == 0 or (type(timeout) is int and timeout > COMMAND_TIMEOUT_MS)
        if unbounded:
            case.body = {**body, "timeout": COMMAND_TIMEOUT_MS}
    return case


def not_a_server_error_but_not_supported(ctx: Any, response: Any, case: Any) -> bool | None:
    """`not_a_server_error`, except for the two documented 501 `NOT_SUPPORTED` answers of osbox serve.

    - the egress API: the fuzzed server has no sandbox networks, so a policy change answers 501
      saying so (Credential Vault bindings without the credential proxy answer 412, not 501);
    - code contexts in a language other than python and bash: the feature exists in the contract,
      not in this runtime, and saying so is the honest answer.
    Any other 5xx, and a 501 anywhere else, fails.
    """
    if (
        case.operation.path.startswith(_NOT_SUPPORTED_PATHS)
        and response.status_code == 501
        and response.json().get("code") == "NOT_SUPPORTED"
    ):
        return None
    return not_a_server_error(ctx, response, case)


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
def test_execd_never_fails_on_generated_requests(
    case: Any, execd_endpoint: tuple[str, dict[str, str]]
) -> None:
    base_url, headers = execd_endpoint
    _bounded(case).call_and_validate(
        base_url=base_url, headers=headers, checks=[not_a_server_error_but_not_supported]
    )


@EGRESS.parametrize()
@FUZZ
def test_egress_never_fails_on_generated_requests(
    case: Any, egress_endpoint: tuple[str, dict[str, str]]
) -> None:
    base_url, headers = egress_endpoint
    case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error_but_not_supported])
