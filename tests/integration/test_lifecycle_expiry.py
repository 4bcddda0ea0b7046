"""Expiry: the reaper deletes sandboxes at their deadline, paused or not, and follows renewals.

The module's server accepts timeouts from 1 second (`min_timeout_seconds=1`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from tests.integration.server_fixtures import requires_runtime
from tests.polling import wait_until

pytestmark = requires_runtime


def _gone(api: httpx2.Client, sandbox_id: str) -> bool:
    return api.get(f"/sandboxes/{sandbox_id}").status_code == 404


def test_sandbox_expires_at_its_timeout(api: httpx2.Client, make_sandbox: Any) -> None:
    sandbox_id = make_sandbox(timeout=1)["id"]
    wait_until(lambda: _gone(api, sandbox_id), what="the sandbox to expire")


def test_paused_sandbox_still_expires(api: httpx2.Client, make_sandbox: Any) -> None:
    sandbox_id = make_sandbox(timeout=2)["id"]
    assert api.post(f"/sandboxes/{sandbox_id}/pause").status_code == 202
    wait_until(lambda: _gone(api, sandbox_id), what="the paused sandbox to expire")


def test_renewal_moves_the_deadline_earlier_or_later(api: httpx2.Client, make_sandbox: Any) -> None:
    keep = make_sandbox(timeout=1)["id"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.post(f"/sandboxes/{keep}/renew-expiration", json={"expiresAt": later}).status_code == 200
    soon = make_sandbox(timeout=3600)["id"]
    sooner = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert api.post(f"/sandboxes/{soon}/renew-expiration", json={"expiresAt": sooner}).status_code == 200
    wait_until(lambda: _gone(api, soon), what="the renewed-earlier sandbox to expire")
    assert api.get(f"/sandboxes/{keep}").json()["status"]["state"] == "Running"


def test_timeout_below_the_minimum_is_rejected(api: httpx2.Client) -> None:
    body = {"image": {"uri": "x"}, "entrypoint": ["true"], "timeout": 0}
    response = api.post("/sandboxes", json=body)
    assert response.status_code == 400 and "at least 1" in response.json()["message"]
