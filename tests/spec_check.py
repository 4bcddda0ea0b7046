"""Validate captured requests and responses against the official OpenAPI documents with openapi-core.

The specs are read from `../shared/specs` next to the repository (or `$OSBOX_SPECS_DIR`); tests that
need them call `require_specs()`, which skips with a message when they are absent.

    check = SpecCheck.load()
    check.request("execd", request, base_url="http://sandbox.test")   # raises on a mismatch
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_FILES = {
    "lifecycle": "sandbox-lifecycle.yml",
    "diagnostic": "diagnostic-api.yml",
    "execd": "execd-api.yaml",
    "egress": "egress-api.yaml",
}
# The server URL each document declares first; requests are re-rooted there before validation.
SPEC_ROOTS = {
    "lifecycle": "http://localhost:8080/v1",
    "diagnostic": "http://localhost:8080/v1",
    "execd": "http://localhost:44772",
    "egress": "http://localhost:18080",
}


def specs_dir() -> Path:
    if env := os.environ.get("OSBOX_SPECS_DIR"):
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "specs"


def require_specs() -> Path:
    directory = specs_dir()
    if not (directory / SPEC_FILES["lifecycle"]).exists():
        pytest.skip(f"OpenAPI specs not found in {directory} (set OSBOX_SPECS_DIR); spec validation skipped")
    return directory


class _Request:
    """An `httpx2.Request` seen through openapi-core's request protocol."""

    def __init__(self, request: httpx2.Request, root: str, base_url: str) -> None:
        url = str(request.url)
        if not url.startswith(base_url.rstrip("/")):
            raise AssertionError(f"{url} is not under the client's base URL {base_url}")
        rest = url[len(base_url.rstrip("/")) :]
        split = urlsplit(root.rstrip("/") + rest)
        self.host_url = f"{split.scheme}://{split.netloc}"
        self.path = split.path
        self.method = request.method.lower()
        request.read()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(
                [(k, v) for k, vs in parse_qs(split.query, keep_blank_values=True).items() for v in vs]
            ),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    def __init__(self, status_code: int, body: Any, content_type: str = "application/json") -> None:
        self.status_code = status_code
        self.data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.content_type = content_type
        self.headers = Headers({"Content-Type": content_type})


class SpecCheck:
    """The four OpenAPI documents, ready to validate requests and responses."""

    def __init__(self, directory: Path) -> None:
        self._apis = {
            name: OpenAPI.from_file_path(str(directory / file)) for name, file in SPEC_FILES.items()
        }

    @classmethod
    @functools.cache
    def load(cls) -> SpecCheck:
        return cls(require_specs())

    def request(self, api: str, request: httpx2.Request, *, base_url: str) -> None:
        """Raise if `request` (sent by a client whose base URL is `base_url`) breaks the `api` spec."""
        self._apis[api].validate_request(_Request(request, SPEC_ROOTS[api], base_url))

    def response(
        self, api: str, request: httpx2.Request, *, base_url: str, status: int, body: Any, content_type: str
    ) -> None:
        """Raise if `body` is not a valid answer with `status` to `request` under the `api` spec."""
        self._apis[api].validate_response(
            _Request(request, SPEC_ROOTS[api], base_url), _Response(status, body, content_type)
        )
