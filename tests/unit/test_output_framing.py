"""The server's output framers (`osbox.server.execd.output`): C and pure Python agree, and any split of
a command's bytes into reads frames to the same thing: exactly the bytes (exact framing) or the
reference's lines (line framing)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from osbox import _speedups
from osbox.server.execd import output
from osbox.server.execd.output import ExactFramer, LineFramer

PREFIX, SUFFIX = b'{"type":"stdout","text":"', b'","timestamp":1}\n\n'

_bytes = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from(
            [b"\n", b"\r", b"\r\n", b'"\\', b"\x00\x1f\x7f", "é€😀".encode(), b"\xe2\x82", b"\xff"]
        ),
        st.just(b"a run of plain ASCII, longer than 16 bytes"),
        st.sampled_from(
            [b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\x80", b"\xf0\x9f\x98"]
        ),
    ),
    max_size=20,
).map(b"".join)


def _texts(frames: bytes) -> list[str]:
    return [json.loads(event)["text"] for event in frames.split(b"\n\n")[:-1]]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500, deadline=None)
@given(data=_bytes, start=st.integers(0, 10), final=st.booleans(), max_line=st.integers(0, 8))
def test_c_and_python_framers_agree(data: bytes, start: int, final: bool, max_line: int) -> None:
    start = min(start, len(data))
    assert _speedups.exact_frame(PREFIX, data, SUFFIX, final) == output._exact_frame_py(
        PREFIX, data, SUFFIX, final
    )
    assert _speedups.line_frames(PREFIX, data, start, SUFFIX, max_line) == output._line_frames_py(
        PREFIX, data, start, SUFFIX, max_line
    )


@settings(max_examples=300, deadline=None)
@given(data=_bytes, cuts=st.lists(st.integers(0, 200), max_size=6), c=st.booleans())
def test_the_exact_framing_gives_back_the_bytes_whatever_the_reads(
    data: bytes, cuts: list[int], c: bool
) -> None:
    framer = ExactFramer("stdout", frame=None if c else output._exact_frame_py)
    frames = b"".join(framer.feed(chunk) for chunk in _split(data, cuts)) + framer.flush()
    text = "".join(_texts(frames))
    assert text.encode("utf-8", "surrogateescape") == data
    assert text == data.decode("utf-8", "surrogateescape")  # no character split between two reads


@settings(max_examples=300, deadline=None)
@given(data=_bytes, cuts=st.lists(st.integers(0, 200), max_size=6), c=st.booleans())
def test_the_line_framing_is_the_references_whatever_the_reads(data: bytes, cuts: list[int], c: bool) -> None:
    framer = LineFramer("stdout", frames=None if c else output._line_frames_py)
    frames = b"".join(framer.feed(chunk) for chunk in _split(data, cuts)) + framer.flush()
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    last = lines.pop()
    expected = [line.decode("utf-8", "replace") or "\n" for line in lines]
    if last:
        expected.append(last.decode("utf-8", "replace"))
    assert _texts(frames) == expected


def test_an_endless_line_comes_in_pieces_of_at_most_a_mebibyte() -> None:
    framer = LineFramer("stderr")
    line = "é".encode() * (output.MAX_LINE_BYTES // 2 + 10)
    texts = _texts(framer.feed(line) + framer.flush())
    assert "".join(texts) == line.decode() and len(texts) == 2
    assert all(len(text.encode()) <= output.MAX_LINE_BYTES for text in texts)


def test_the_server_keeps_its_heap_for_output_buffers_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        assert output.keep_heap() is False
        return
    assert output.keep_heap() is True
    assert output.keep_heap() is True  # once per process: asking again changes nothing


def test_pump_reads_a_pipe_whole_also_past_the_point_where_it_coalesces_reads() -> None:
    """Beyond `COALESCE_AFTER_BYTES`, small reads are followed by a pause: nothing is lost or reordered,
    and the pump ends at end of file (a writer on a thread, in pieces as `yes` writes them)."""
    data = bytes(range(256)) * (3 * output.COALESCE_AFTER_BYTES // 256 + 7)

    def write(fd: int) -> None:
        with os.fdopen(fd, "wb", buffering=0) as pipe:
            for start in range(0, len(data), 4096):
                pipe.write(data[start : start + 4096])

    async def scenario() -> bytes:
        read_end, write_end = os.pipe()
        writer = threading.Thread(target=write, args=(write_end,))
        writer.start()
        received = bytearray()

        async def take(chunk: memoryview) -> None:
            received.extend(chunk)

        await output.pump(read_end, take)
        writer.join()
        return bytes(received)

    assert asyncio.run(scenario()) == data
