"""The PTY pieces without a server: the output log (replay, channels, flow control), the client's frame
reader (`PtyStream`), the WebSocket URL, and a session on the fake backend (a host pty when the sandbox
has no /dev/ptmx of its own, made the shell's controlling terminal by `spawn(controlling_tty=True)`)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from osbox._pty import PtyExit, PtyOutput, PtyStream, control, output_frame, pty_ws_url, replay_frame
from osbox.server._backend.base import SandboxSpec
from osbox.server.execd.pty import PtySession, shell_status
from osbox.server.execd.ptylog import OutputLog
from tests.fake_backend import FakeBackend, FakeSandbox


async def test_the_log_keeps_the_newest_bytes_by_offset() -> None:
    log = OutputLog(capacity=10, high_water=100)
    log.append(1, b"abcdef")
    log.append(2, b"ghij")
    assert log.read(0) == (0, b"abcdefghij")
    assert log.chunks_from(4) == [(1, b"ef"), (2, b"ghij")]
    log.append(1, b"klmn")  # 14 bytes written, the oldest 4 dropped
    assert (log.total, log.oldest) == (14, 4)
    assert log.read(0) == (4, b"efghijklmn")  # clamped to what is kept
    assert log.read(12) == (12, b"mn")
    assert log.read(14) == (14, b"")
    log.append(1, b"0123456789ABC")  # a chunk larger than the capacity keeps its end
    assert log.read(0) == (17, b"3456789ABC")


async def test_the_log_pauses_its_producer_for_a_slow_reader() -> None:
    switches: list[bool] = []
    log = OutputLog(capacity=1000, high_water=10)
    log.pause_producer = switches.append
    log.append(1, b"x" * 20)  # nobody attached: no pause
    log.attach(20)
    log.append(1, b"y" * 11)
    assert switches == [True]
    log.consumed(25)  # still 6 behind: more than half the high water
    assert switches == [True]
    log.consumed(31)
    assert switches == [True, False]
    log.append(1, b"z" * 11)
    log.detach()  # nobody reads: the producer goes on
    assert switches == [True, False, True, False]


async def test_a_reader_wakes_on_output_and_on_the_end() -> None:
    log = OutputLog()
    waiter = asyncio.create_task(log.wait_beyond(0))
    await asyncio.sleep(0)
    assert not waiter.done()
    log.append(1, b"a")
    await asyncio.wait_for(waiter, 5)
    ended = asyncio.create_task(log.wait_beyond(1))
    log.end()
    await asyncio.wait_for(ended, 5)


def test_the_client_tracks_offsets_through_replay_and_live_frames() -> None:
    stream = PtyStream(since=3)
    assert stream.feed(replay_frame(3, b"abc")) == PtyOutput(b"abc", "replay", 3)
    assert stream.feed(control("connected", session_id="s", mode="pty", offset=6)) is None
    assert (stream.mode, stream.offset) == ("pty", 6)
    assert stream.feed(output_frame(1, b"de")) == PtyOutput(b"de", "stdout", 6)
    assert stream.feed(output_frame(2, b"f")) == PtyOutput(b"f", "stderr", 8)
    assert stream.offset == 9
    assert stream.feed(control("pong")) is None and stream.pongs == 1
    assert stream.feed(control("error", code="INVALID_FRAME", error="x")) == {
        "type": "error",
        "code": "INVALID_FRAME",
        "error": "x",
    }
    assert stream.feed("not json") is None and stream.feed(b"") is None and stream.feed(b"\x09z") is None
    assert stream.feed(control("exit", exit_code=130)) == PtyExit(130)
    assert stream.exit_code == 130


def test_the_websocket_url() -> None:
    base = "https://gw.test/sandboxes/s1/proxy/44772/"
    assert pty_ws_url(base, "p1", since=None, takeover=False, pipe=False) == (
        "wss://gw.test/sandboxes/s1/proxy/44772/pty/p1/ws"
    )
    assert pty_ws_url("http://h:1", "p1", since=5, takeover=True, pipe=True) == (
        "ws://h:1/pty/p1/ws?since=5&takeover=1&pty=0"
    )
    assert pty_ws_url("http://h:1", "p1", since=None, takeover=False, pipe=False, readonly=True) == (
        "ws://h:1/pty/p1/ws?readonly=1"
    )


def test_exit_statuses_are_a_shells() -> None:
    assert [shell_status(0), shell_status(3), shell_status(-9), shell_status(-2)] == [0, 3, 137, 130]


@pytest.fixture
async def fake_sandbox(tmp_path: Path) -> AsyncIterator[FakeSandbox]:
    backend = FakeBackend()
    handle = await backend.create(SandboxSpec("f" + secrets.token_hex(4), ["sleep", "3600"], tmp_path / "s"))
    try:
        yield handle
    finally:
        await backend.close()


async def _output_until(session: PtySession, wanted: bytes) -> bytes:
    async def read() -> bytes:
        while wanted not in (data := session.log.read(0)[1]):
            if session.log.ended:
                raise AssertionError(f"ended before {wanted!r}: {data!r}")
            await session.log.wait_beyond(session.log.total)
        return data

    return await asyncio.wait_for(read(), 30)


async def test_a_session_on_the_fake_backend_has_a_controlling_terminal(fake_sandbox: FakeSandbox) -> None:
    command = "echo ctty=$(ps -o tty= -p $$); read line; stty size; echo got-$line; exit 4"
    session = PtySession("s1", "/", command)
    try:
        await session.start(fake_sandbox, pipe=False)
        assert b"ctty=pts/" in await _output_until(session, b"ctty=p")  # not "?": it is the shell's own
        session.resize(77, 11)
        await session.write(b"hello\n")
        assert b"11 77" in await _output_until(session, b"11 77")
        assert b"got-hello" in await _output_until(session, b"got-hello")
        await asyncio.wait_for(session.ended.wait(), 30)
        assert session.exit_code == 4 and session.status()["running"] is False
    finally:
        await session.close()


async def test_a_session_in_pipe_mode_and_its_kill(fake_sandbox: FakeSandbox) -> None:
    session = PtySession("s2", "/", "echo out; echo err >&2; exec sleep 300")
    await session.start(fake_sandbox, pipe=True)
    await _output_until(session, b"err")
    channels = {channel for channel, _data in session.log.chunks_from(0)}
    assert channels == {1, 2}
    await session.close()
    assert session.exit_code == 128 + 9 and session.log.ended
