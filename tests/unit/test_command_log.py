"""`CommandLog`: the newest output kept within the cap, absolute cursors, and what a read skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from osbox.server.execd.logfile import CommandLog, LogChunk


def _read(log: CommandLog, cursor: int, limit: int) -> LogChunk:
    return asyncio.run(log.read(cursor, limit))


def _whole(log: CommandLog, cursor: int = 0) -> tuple[bytes, int]:
    """Everything readable from `cursor`, in small reads; returns it and what the first read skipped."""
    chunk = _read(log, cursor, 7)
    data, skipped, cursor = chunk.data, chunk.dropped, chunk.next_cursor
    while cursor < log.end:
        chunk = _read(log, cursor, 7)
        assert chunk.dropped == 0
        data, cursor = data + chunk.data, chunk.next_cursor
    return data, skipped


def test_below_the_cap_everything_is_kept(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=100)
    log.write(b"hello ")
    log.write(b"world\n")
    assert _whole(log) == (b"hello world\n", 0)
    assert _whole(log, 6) == (b"world\n", 0)
    assert not log.previous_path.exists()


def test_beyond_the_cap_the_oldest_output_goes_and_cursors_stay_absolute(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=20)  # segments of 10 bytes
    output = b"".join(b"%04d\n" % i for i in range(100))  # 500 bytes
    for start in range(0, len(output), 5):
        log.write(output[start : start + 5])
    assert log.end == 500
    kept = log.path.stat().st_size + log.previous_path.stat().st_size
    assert 10 <= kept <= 20 and log.first_kept == 500 - kept
    data, skipped = _whole(log)
    assert (data, skipped) == (output[-kept:], 500 - kept)
    # A cursor inside what is kept reads from there, exactly.
    assert _whole(log, 495) == (output[495:], 0)
    # A cursor past the end answers nothing, and the end.
    assert _read(log, 10_000, 100) == LogChunk(b"", 500, 0)


def test_a_read_keeps_its_bytes_while_the_log_rotates(tmp_path: Path) -> None:
    """The segments are opened before the read starts: a rotation meanwhile changes nothing."""

    async def scenario() -> bytes:
        log = CommandLog(tmp_path / "c.log", max_bytes=20)
        log.write(b"0123456789")
        log.write(b"abcdefghij")
        reading = asyncio.ensure_future(log.read(0, 100))
        await asyncio.sleep(0)  # the read has opened its segments; now two rotations drop them
        log.write(b"KLMNOPQRST")
        log.write(b"UVWXYZ!!!!")
        return (await reading).data

    assert asyncio.run(scenario()) == b"0123456789abcdefghij"


def test_close_and_remove(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=4)
    log.write(b"abcdef")
    log.write(b"gh")
    log.close()
    log.write(b"ignored")  # after close: a no-op, never an error
    assert log.end == 8
    log.remove()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("max_bytes", [1, 2, 3])
def test_tiny_caps_still_keep_the_newest_byte(tmp_path: Path, max_bytes: int) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=max_bytes)
    for byte in b"xyz":
        log.write(bytes([byte]))
    data, _ = _whole(log)
    assert data.endswith(b"z") and len(data) <= max(2, max_bytes)
