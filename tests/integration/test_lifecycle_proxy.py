"""The server proxy and direct endpoints, to a real HTTP server running inside a sandbox."""

from __future__ import annotations

import socket
from typing import Any

import httpx2
import pytest

from osbox.server import LocalServer
from tests.integration.server_fixtures import requires_runtime
from tests.polling import wait_until

pytestmark = requires_runtime

# An HTTP/1.1 echo server: answers every method with what it received, as JSON.
ECHO_SERVER = """
import http.server, json, os
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self):
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        out = json.dumps({"method": self.command, "path": self.path, "tag": os.environ.get("TAG", ""),
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "size": len(body), "head": body[:32].decode("latin-1")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = reply
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), Echo).serve_forever()
"""


@pytest.fixture
def echo_sandbox(make_sandbox: Any, lifecycle_server: LocalServer) -> str:
    sandbox_id: str = make_sandbox(["python3", "-c", ECHO_SERVER], env={"TAG": "first"})["id"]
    url = f"{lifecycle_server.base_url}/sandboxes/{sandbox_id}/proxy/8000/ready"
    wait_until(lambda: httpx2.get(url).status_code == 200, what="the echo server to listen")
    return sandbox_id


def test_proxy_streams_method_query_headers_and_body(
    lifecycle_server: LocalServer, echo_sandbox: str
) -> None:
    base = f"{lifecycle_server.base_url}/sandboxes/{echo_sandbox}/proxy/8000"
    payload = bytes(range(256)) * 8192  # 2 MiB
    with httpx2.Client(base_url=base, timeout=60) as client:
        response = client.post(
            "/upload/here?x=1&y=two",
            content=payload,
            headers={
                "X-Custom": "kept",
                "Cookie": "session=secret",
                "Authorization": "Bearer secret",
                "OPEN-SANDBOX-API-KEY": "secret",
            },
        )
    assert response.status_code == 200 and response.headers["X-Echo"] == "yes"
    echo = response.json()
    assert echo["method"] == "POST" and echo["path"] == "/upload/here?x=1&y=two"
    assert echo["size"] == len(payload) and echo["head"] == payload[:32].decode("latin-1")
    assert echo["headers"]["x-custom"] == "kept"
    for stripped in ("cookie", "authorization", "open-sandbox-api-key"):
        assert stripped not in echo["headers"]
    assert echo["headers"]["host"] == "127.0.0.1:8000"
    with httpx2.Client(base_url=lifecycle_server.base_url) as client:
        root = client.delete(f"/v1/sandboxes/{echo_sandbox}/proxy/8000")
    assert root.json()["method"] == "DELETE" and root.json()["path"] == "/"


def test_proxy_answers_502_when_nothing_listens(lifecycle_server: LocalServer, echo_sandbox: str) -> None:
    response = httpx2.get(f"{lifecycle_server.base_url}/sandboxes/{echo_sandbox}/proxy/8001/")
    assert response.status_code == 502
    assert set(response.json()) == {"code", "message"}
    unknown = httpx2.get(f"{lifecycle_server.base_url}/sandboxes/nope/proxy/8000/")
    assert unknown.status_code == 404
    egress = httpx2.get(f"{lifecycle_server.base_url}/sandboxes/{echo_sandbox}/proxy/18080/policy")
    assert egress.status_code == 401 and egress.json()["code"] == "UNAUTHORIZED"  # its own token


def test_direct_endpoint_forwards_tcp_per_sandbox(
    api: httpx2.Client, make_sandbox: Any, lifecycle_server: LocalServer, echo_sandbox: str
) -> None:
    other = make_sandbox(["python3", "-c", ECHO_SERVER], env={"TAG": "second"})["id"]
    endpoints = [api.get(f"/sandboxes/{sid}/endpoints/8000").json() for sid in (echo_sandbox, other)]
    assert endpoints[0]["endpoint"] != endpoints[1]["endpoint"]
    again = api.get(f"/sandboxes/{echo_sandbox}/endpoints/8000").json()
    assert again == endpoints[0]  # one forwarder per (sandbox, port)

    def tag(endpoint: str) -> str | None:
        try:
            return str(httpx2.get(f"http://{endpoint}/who").json()["tag"])
        except httpx2.TransportError:
            return None

    assert wait_until(lambda: tag(endpoints[1]["endpoint"]), what="the second echo server") == "second"
    assert tag(endpoints[0]["endpoint"]) == "first"
    host, port = endpoints[1]["endpoint"].rsplit(":", 1)
    # Raw TCP through the forwarder: a hand-written HTTP/1.0 request.
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(b"GET /raw HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.") and b'"tag": "second"' in received
    assert api.delete(f"/sandboxes/{other}").status_code == 204
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=5) as closed:
        closed.sendall(b"GET / HTTP/1.0\r\n\r\n")
        if not closed.recv(1):
            raise ConnectionResetError("forwarder closed the connection")
