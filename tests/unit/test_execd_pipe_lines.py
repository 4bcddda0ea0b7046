"""`PipeLines`: the server reading a stdin pipe a line at a time, as a python cell's `input()` takes it."""

from __future__ import annotations

import asyncio

import pytest

from osbox.server.execd.stdin import PipeLines, StdinClosed, StdinPipe


async def test_lines_as_written_then_the_last_partial_one_then_the_end() -> None:
    pipe = StdinPipe()
    lines = PipeLines(pipe)
    assert pipe.child_fd == -1  # the reader owns the read end now
    pending = asyncio.ensure_future(lines.readline())  # waits for the line to come
    await pipe.write(b"fir")
    await pipe.write(b"st\nsecond\nthi")
    assert await pending == b"first\n"
    assert await lines.readline() == b"second\n"
    pipe.close()
    assert await lines.readline() == b"thi"  # no newline before the end
    assert await lines.readline() is None
    lines.close()


async def test_a_closed_reader_closes_the_pipe_for_writers() -> None:
    pipe = StdinPipe()
    lines = PipeLines(pipe)
    lines.close()
    lines.close()  # idempotent
    with pytest.raises(StdinClosed):
        await pipe.write(b"nobody reads this\n")
    pipe.close()
