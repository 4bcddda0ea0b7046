"""Oversize and out-of-range input to a real `osbox serve`: refused with a 4xx that says why, never a 500.

- the request head (headers, their count, the URL) is capped in the HTTP protocol, before
  authentication: a 64 MiB header to `/health` is refused after its first 64 KiB;
- every number of every request is range-checked (timeouts, cpu/memory, uid/gid, paging), JSON is
  finite and at most 64 deep, and a command too long for `execve` is a 400 naming the limit.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import psutil  # type: ignore[import-untyped]
import pytest

from osbox.server import LocalServer
from tests.integration.server_fixtures import requires_runtime

pytestmark = requires_runtime

MiB = 2**20


def _send_and_read(server: LocalServer, head: bytes, filler: bytes, repeat: int, tail: bytes) -> bytes:
    """Send `head + filler * repeat + tail` on a raw connection while reading the answer; return it.

    The sender runs in a thread, so a server that answers early is read early; a send the server
    cut short (it closed the connection) is expected. The socket timeout bounds the whole exchange.
    """
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)

    def send() -> None:
        try:
            sock.sendall(head)
            for _ in range(repeat):
                sock.sendall(filler)
            sock.sendall(tail)
        except OSError:
            pass  # refused and closed: the rest was not wanted

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = bytearray()
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sender.join(timeout=60)
        sock.close()
    return bytes(answer)


def _status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


class _PeakRss:
    """The largest RSS of this process (the in-process server's) seen while the block runs."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return int(self.peak - self.baseline)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key="input-limits-key", warm_pool_size=0) as srv:
        yield srv


# --- the request head --------------------------------------------------------------------------


def test_a_64_mib_header_is_refused_early_without_authentication_and_bounded_memory(
    server: LocalServer,
) -> None:
    with _PeakRss() as rss:
        answer = _send_and_read(
            server,
            b"GET /health HTTP/1.1\r\nHost: osbox\r\nX-Huge: ",
            b"a" * MiB,
            64,
            b"\r\n\r\n",
        )
    status, body = _status_and_body(answer)
    assert status == 431
    assert body == {
        "code": "REQUEST_HEADERS_TOO_LARGE",
        "message": "the request line and headers are larger than 65536 bytes",
    }
    # The server kept at most its 64 KiB cap of it (the 1 MiB filler is the test's own).
    assert rss.growth < 32 * MiB, f"RSS grew by {rss.growth / MiB:.0f} MiB"
    assert httpx2.get(server.base_url + "/health").status_code == 200


def test_more_headers_than_the_cap_are_refused(server: LocalServer) -> None:
    headers = b"".join(b"X-Header-%d: 1\r\n" % i for i in range(101))
    answer = _send_and_read(server, b"GET /health HTTP/1.1\r\nHost: osbox\r\n", headers, 1, b"\r\n")
    assert _status_and_body(answer) == (
        431,
        {"code": "REQUEST_HEADERS_TOO_LARGE", "message": "the request has more than 100 headers"},
    )


def test_a_url_longer_than_the_cap_is_refused(server: LocalServer) -> None:
    response = httpx2.get(server.base_url + "/health", params={"q": "x" * 17000})
    assert response.status_code == 414
    assert response.json() == {
        "code": "URI_TOO_LONG",
        "message": "the request URL is longer than 16384 bytes",
    }


def test_heads_within_the_caps_are_served_on_one_connection(server: LocalServer) -> None:
    # 40 KiB of headers a request, several requests on one keep-alive connection: the count resets.
    headers = {f"X-Pad-{i}": "p" * 1000 for i in range(40)}
    with httpx2.Client(base_url=server.base_url, timeout=30) as client:
        for _ in range(4):
            assert client.get("/health", headers=headers).status_code == 200
        assert client.get("/health", params={"q": "x" * 15000}).status_code == 200
        refused = client.get("/health", headers={"X-Big": "b" * 70000})
        assert refused.status_code == 431
    # A body is not part of the head: a large one still reaches the app (which caps it itself).
    response = httpx2.post(
        server.base_url + "/v1/sandboxes",
        content=b"x" * (2 * MiB),
        headers={"OPEN-SANDBOX-API-KEY": "input-limits-key"},
    )
    assert response.status_code == 400
    assert "larger than" in response.json()["message"]


# --- numbers and JSON ---------------------------------------------------------------------------

_CREATE = '{"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"]'
_NESTED = "[" * 100_000 + "]" * 100_000


def _create(**fields: Any) -> str:
    return _CREATE + "".join(f", {json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(_create(timeout="1e12"), "timeout must be at most", id="timeout-1e12"),
        pytest.param(_create(timeout=str(2**63)), "timeout must be at most", id="timeout-2**63"),
        pytest.param(_create(timeout="Infinity"), "Infinity is not a JSON number", id="timeout-Infinity"),
        pytest.param(_create(timeout="-Infinity"), "Infinity is not a JSON number", id="timeout--Infinity"),
        pytest.param(_create(timeout="NaN"), "NaN is not a JSON number", id="timeout-NaN"),
        pytest.param(_create(timeout="1e400"), "too large", id="timeout-1e400"),
        pytest.param(_create(timeout="-5"), "timeout must be at least", id="timeout-negative"),
        pytest.param(
            _create(resourceLimits=json.dumps({"cpu": "9" * 400})),
            "is not a CPU quantity",
            id="cpu-400-digits",
        ),
        pytest.param(
            _create(resourceLimits=json.dumps({"memory": "9" * 400})),
            "is not a memory quantity",
            id="memory-400-digits",
        ),
        pytest.param(
            _create(resourceLimits=json.dumps({"cpu": "1000000"})), "at most 65536 cores", id="cpu-too-many"
        ),
        pytest.param(
            _create(resourceLimits=json.dumps({"memory": "9000Ei"})), "at most 1Ei", id="memory-too-much"
        ),
        pytest.param(
            _create(resourceLimits=json.dumps({"cpu": "-1"})), "not a CPU quantity", id="cpu-negative"
        ),
        pytest.param(
            _create(resourceLimits=json.dumps({"cpu": "\u00b2"})),
            "not a CPU quantity",
            id="cpu-superscript-2",
        ),
        pytest.param(_NESTED, "nested deeper than 64 levels", id="nested-arrays"),
        pytest.param(
            _create(metadata='{"a":' * 70 + "1" + "}" * 70), "nested deeper than", id="nested-objects"
        ),
        pytest.param("9" * 5000, "not valid JSON", id="5000-digit-integer"),
    ],
)
def test_bad_numbers_in_a_create_are_a_400(server: LocalServer, body: str, message: str) -> None:
    response = httpx2.post(
        server.base_url + "/v1/sandboxes",
        content=body,
        headers={"OPEN-SANDBOX-API-KEY": "input-limits-key", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=99999999999999999999999999", "page must be an integer of at most 9 digits"),
        ("pageSize=1e3", "pageSize must be an integer"),
        ("page=0", "page must be at least 1"),
        ("pageSize=-1", "pageSize must be between 1 and 200"),
        ("page=\u00b2", "page must be an integer"),
    ],
)
@pytest.mark.parametrize("listing", ["/v1/sandboxes", "/v1/snapshots"])
def test_bad_paging_is_a_400(server: LocalServer, listing: str, query: str, message: str) -> None:
    response = httpx2.get(
        f"{server.base_url}{listing}?{query}", headers={"OPEN-SANDBOX-API-KEY": "input-limits-key"}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_expiry_past_the_range_of_dates_is_a_400(server: LocalServer, moment: str) -> None:
    response = httpx2.post(
        f"{server.base_url}/v1/sandboxes/any-sandbox/renew-expiration",
        json={"expiresAt": moment},
        headers={"OPEN-SANDBOX-API-KEY": "input-limits-key"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "SANDBOX::INVALID_EXPIRATION"


@pytest.fixture(scope="module")
def execd(server: LocalServer) -> Iterator[httpx2.Client]:
    """An execd client for one sandbox, through the server's proxy, as clients reach it."""
    headers = {"OPEN-SANDBOX-API-KEY": "input-limits-key"}
    with httpx2.Client(base_url=server.base_url + "/v1", headers=headers, timeout=60) as api:
        created = api.post(
            "/sandboxes",
            json={"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"], "timeout": 600},
        )
        assert created.status_code == 202, created.text
        sandbox_id = created.json()["id"]
        endpoint = api.get(f"/sandboxes/{sandbox_id}/endpoints/44772").json()
        try:
            with httpx2.Client(
                base_url="http://" + endpoint["endpoint"], headers=endpoint["headers"], timeout=60
            ) as client:
                yield client
        finally:
            api.delete(f"/sandboxes/{sandbox_id}")


_LONG_COMMAND = "echo " + "a" * (200 * 1024)


def _session_run(execd: httpx2.Client, body: str) -> httpx2.Response:
    session = execd.post("/session", json={}).json()["session_id"]
    return execd.post(f"/session/{session}/run", content=body)


@pytest.mark.parametrize(
    ("send", "body", "message"),
    [
        ("command", '{"command": "true", "timeout": 1e12}', "'timeout' must be an integer from 0 to"),
        (
            "command",
            json.dumps({"command": "true", "timeout": 2**63}),
            "'timeout' must be an integer from 0 to",
        ),
        ("command", '{"command": "true", "timeout": Infinity}', "Infinity is not a JSON number"),
        ("command", '{"command": "true", "timeout": NaN}', "NaN is not a JSON number"),
        ("command", '{"command": "true", "timeout": -1}', "'timeout' must be an integer from 0 to"),
        (
            "command",
            json.dumps({"command": "true", "uid": 2**63}),
            "'uid' must be an integer from 0 to 2147483647",
        ),
        ("command", '{"command": "true", "uid": 0, "gid": -1}', "'gid' must be an integer from 0 to"),
        ("command", '{"command": "true", "uid": "\u00b2"}', "'uid' must be an integer"),
        ("command", _NESTED, "nested deeper than"),
        ("command", json.dumps({"command": _LONG_COMMAND}), "at most 131071 bytes per argument"),
        ("command", json.dumps({"command": _LONG_COMMAND, "background": True}), "at most 131071 bytes"),
        (
            "command",
            json.dumps({"command": "true", "envs": {"BIG": "v" * (200 * 1024)}}),
            "at most 131071 bytes per argument",
        ),
        ("code", json.dumps({"code": _LONG_COMMAND}), "at most 131071 bytes per argument"),
        ("session", json.dumps({"command": _LONG_COMMAND}), "at most 131071 bytes per argument"),
        ("session", '{"command": "true", "timeout": 1e300}', "'timeout' must be an integer from 0 to"),
        ("depth", "depth=99999999999", "'depth' must be an integer from 0 to 2147483647"),
    ],
)
def test_bad_numbers_and_oversize_commands_in_execd_are_a_400(
    execd: httpx2.Client, send: str, body: str, message: str
) -> None:
    senders: dict[str, Callable[[], httpx2.Response]] = {
        "command": lambda: execd.post("/command", content=body),
        "code": lambda: execd.post("/code", content=body),
        "session": lambda: _session_run(execd, body),
        "depth": lambda: execd.get(f"/directories/list?path=/tmp&{body}"),
    }
    response = senders[send]()
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_a_command_of_the_largest_argument_linux_takes_runs_and_one_byte_more_is_a_400(
    execd: httpx2.Client,
) -> None:
    largest = "echo ran; : " + "a" * (131071 - len("echo ran; : "))  # MAX_ARG_STRLEN - 1 bytes
    response = execd.post("/command", json={"command": largest})
    assert response.status_code == 200, response.text
    assert "ran" in response.text
    response = execd.post("/command", json={"command": largest + "a"})
    assert response.status_code == 400
    assert response.json()["message"] == (
        "a command (or an environment variable) of 131072 bytes is too long to run: "
        "Linux allows at most 131071 bytes per argument"
    )


def test_a_log_cursor_that_is_not_an_ascii_number_is_a_400(execd: httpx2.Client) -> None:
    started = execd.post("/command", json={"command": "echo hello", "background": True})
    assert started.status_code == 200, started.text
    command_id = json.loads(started.text.splitlines()[0])["text"]
    response = execd.get(f"/command/{command_id}/logs", params={"cursor": "\u00b2"})  # '²' is a "digit"
    assert response.status_code == 400, response.text
    assert "'cursor' must be an integer" in response.json()["message"]
