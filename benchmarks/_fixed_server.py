"""A minimal fast HTTP server answering every request with one fixed small Sandbox JSON.

Run as `python benchmarks/_fixed_server.py PORT`; a raw ASGI callable under uvicorn, so the server
side costs the same for every client measured against it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn

SANDBOX = {
    "id": "sbx-0123456789abcdef",
    "status": {
        "state": "Running",
        "reason": None,
        "message": None,
        "lastTransitionAt": "2026-06-01T12:00:00Z",
    },
    "metadata": {"team": "bench", "env": "dev"},
    "entrypoint": ["tail", "-f", "/dev/null"],
    "expiresAt": "2026-06-01T12:10:00Z",
    "createdAt": "2026-06-01T12:00:00Z",
    "image": {"uri": "python:3.11"},
}
BODY = json.dumps(SANDBOX, separators=(",", ":")).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer 200 with the fixed body, whatever was asked."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
