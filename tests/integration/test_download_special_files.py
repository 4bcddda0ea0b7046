"""Downloads and in-place replaces of what is not a regular file are refused at once (issue 11, 10a).

A FIFO the sandbox planted used to block the open for ever (no writer ever comes), and with it the
request; a stuck read now ends the response after `READ_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
from starlette.types import Message

from osbox.server.execd import transfer
from osbox.server.execd.transfer import FdResponse
from tests.integration.execd_fixtures import Execd

#: Generous: a refusal takes milliseconds; the bound only keeps a regression from hanging the suite.
BOUND_S = 20


async def _bounded_get(execd: Execd, path: str) -> tuple[int, str]:
    response = await asyncio.wait_for(
        execd.client.get("/files/download", params={"path": path}), timeout=BOUND_S
    )
    return response.status_code, response.json()["message"]


async def test_downloading_a_fifo_a_device_or_a_socket_is_a_clear_400(execd: Execd) -> None:
    await execd.sh(
        "mkfifo /workspace/f && ln -s /workspace/f /workspace/to-fifo && "
        "python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"/workspace/s\")'"
    )
    for path, kind in [
        ("/workspace/f", "FIFO"),
        ("/workspace/to-fifo", "FIFO"),
        ("/dev/zero", "character device"),
        ("/workspace/s", "socket"),  # a socket cannot be opened at all (ENXIO)
    ]:
        status, message = await _bounded_get(execd, path)
        assert status == 400, (path, status, message)
        assert kind in message, message


async def test_replacing_in_a_fifo_is_refused_at_once(execd: Execd) -> None:
    await execd.sh("mkfifo /workspace/g")
    response = await asyncio.wait_for(
        execd.client.post("/files/replace", json={"/workspace/g": {"old": "a", "new": "b"}}), BOUND_S
    )
    assert response.status_code == 400 and "regular file" in response.json()["message"], response.text


@pytest.fixture
def stuck_pread(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """`os.pread` in transfer blocks until the returned event is set (a hung file system)."""
    release = threading.Event()

    def pread(fd: int, length: int, offset: int) -> bytes:
        release.wait(timeout=60)
        return b"x" * length

    monkeypatch.setattr(os, "pread", pread)  # transfer reads through os.pread
    monkeypatch.setattr(transfer, "READ_TIMEOUT_S", 0.2)
    yield release
    release.set()


async def test_a_stuck_read_ends_the_response_and_the_fd_is_closed_later(
    stuck_pread: threading.Event,
) -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    response = FdResponse(read_end, 0, 10, 200, {})
    await asyncio.wait_for(response({"type": "http"}, receive, send), BOUND_S)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    os.fstat(read_end)  # still open: a thread is reading it
    stuck_pread.set()

    def closed() -> bool:
        try:
            os.fstat(read_end)
        except OSError:
            return True
        return False

    for _ in range(BOUND_S * 20):
        if closed():
            break
        await asyncio.sleep(0.05)
    assert closed()
