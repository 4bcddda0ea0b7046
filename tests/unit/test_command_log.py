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


# -- ring=True: one file written in place (a foreground command's copy of its output) -------------


@pytest.mark.parametrize("piece", [1, 3, 5, 7, 20, 23, 64, 500])
def test_a_ring_keeps_the_newest_max_bytes_in_one_file_whatever_the_writes(
    tmp_path: Path, piece: int
) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=20, ring=True)
    output = b"".join(b"%04d\n" % i for i in range(100))  # 500 bytes
    for start in range(0, len(output), piece):
        log.write(output[start : start + piece])
    assert log.end == 500 and log.first_kept == 480
    assert [path.name for path in tmp_path.iterdir()] == ["c.log"]
    assert log.path.stat().st_size == 20
    assert _whole(log) == (output[-20:], 480)
    # Cursors stay absolute, also for reads that wrap around the file's end.
    for cursor in range(480, 500):
        assert _whole(log, cursor) == (output[cursor:], 0)
        chunk = _read(log, cursor, 100)
        assert chunk == LogChunk(output[cursor:], 500, 0)
    assert _read(log, 10_000, 100) == LogChunk(b"", 500, 0)


def test_a_ring_below_its_size_is_the_output_as_written(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=100, ring=True)
    log.write(b"hello ")
    log.write(memoryview(b"world\n"))
    assert log.path.read_bytes() == b"hello world\n"
    assert _whole(log) == (b"hello world\n", 0)
    assert _whole(log, 6) == (b"world\n", 0)


def test_a_ring_read_drops_what_was_overwritten_while_it_read(tmp_path: Path) -> None:
    """The ring's bytes are overwritten in place: a read answers only what was still kept after it."""

    async def scenario() -> LogChunk:
        log = CommandLog(tmp_path / "c.log", max_bytes=20, ring=True)  # cursors 0..19 kept
        log.write(b"0123456789")
        log.write(b"abcdefghij")
        reading = asyncio.ensure_future(log.read(0, 100))
        await asyncio.sleep(0)  # the read has started; now 15 bytes overwrite the oldest 15
        log.write(b"KLMNOPQRSTUVWXY")
        return await reading

    # Whether the thread read before or after the overwrite, only the bytes still kept come back.
    assert asyncio.run(scenario()) == LogChunk(b"fghij", 20, 15)


def test_a_ring_closed_and_removed(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "c.log", max_bytes=4, ring=True)
    log.write(b"abcdef")
    log.close()
    log.write(b"ignored")
    assert log.end == 6 and _whole(log) == (b"cdef", 2)
    log.remove()
    assert list(tmp_path.iterdir()) == []
