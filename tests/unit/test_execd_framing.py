"""Pure pieces of the execd server: line framing, event framing, the channel, Range parsing, dispositions."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osbox._decoder import EventDecoder, OutputRun
from osbox.server.execd import output, streaming
from osbox.server.execd.output import LineFramer
from osbox.server.execd.streaming import EventChannel, frame
from osbox.server.execd.transfer import content_disposition, parse_range


def split(*chunks: bytes) -> list[str]:
    """The texts of the line events the chunks (reads of one pipe) are framed into."""
    framer = LineFramer("stdout")
    frames = b"".join(framer.feed(chunk) for chunk in chunks) + framer.flush()
    return [json.loads(event)["text"] for event in frames.split(b"\n\n")[:-1]]


def test_lf_cr_crlf_and_empty_lines() -> None:
    assert split(b"a\nb\r\nc\rd") == ["a", "b", "c", "d"]
    assert split(b"a\n\nb\n") == ["a", "\n", "b"]
    assert split(b"\n") == ["\n"]
    assert split(b"") == []


def test_crlf_split_across_reads_is_one_line_end() -> None:
    assert split(b"a\r", b"\nb\n") == ["a", "b"]
    assert split(b"a\r", b"\rb") == ["a", "\n", "b"]


def test_partial_last_line_flushed() -> None:
    assert split(b"no newline") == ["no newline"]
    assert split(b"x\n", b"tail") == ["x", "tail"]


def test_utf8_character_split_across_reads() -> None:
    data = "héllo → wörld\n".encode()
    for cut in range(1, len(data)):
        assert split(data[:cut], data[cut:]) == ["héllo → wörld"]


def test_invalid_utf8_is_replaced() -> None:
    assert split(b"a\xffb\n") == ["a\ufffdb"]


def test_very_long_line_is_emitted_in_pieces_without_splitting_characters() -> None:
    data = ("é" * output.MAX_LINE_BYTES).encode()  # 2 bytes per character
    lines = split(data[:12345], data[12345:])
    assert "".join(lines) == "é" * output.MAX_LINE_BYTES
    assert all("\ufffd" not in line for line in lines)


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_any_chunking_gives_the_same_lines(chunks: list[bytes]) -> None:
    assert split(*chunks) == split(b"".join(chunks))


def test_frame_is_bare_json_with_blank_line_and_ms_timestamp() -> None:
    raw = frame("stdout", text="hi")
    assert raw.endswith(b"\n\n") and not raw.startswith(b"data:")
    event = json.loads(raw)
    assert event["type"] == "stdout" and event["text"] == "hi"
    assert event["timestamp"] > 1_600_000_000_000


def test_output_frames_take_the_sdk_decoders_fast_path() -> None:
    # The SDK cuts runs of output frames in this exact compact shape out without decoding JSON;
    # a change of key order, spacing or escaping here would silently send it down the slow path.
    frames = [
        frame("stdout", text="plain"),
        frame("stderr", text="héllo → wörld"),
        frame("stdout", text="\n"),
    ]
    items = EventDecoder().feed_items(b"".join(frames))
    assert len(items) == 1 and isinstance(items[0], OutputRun)
    assert items[0].objects() == [json.loads(raw) for raw in frames]


async def drain(channel: EventChannel) -> list[bytes]:
    return [event async for event in channel.events()]


async def test_channel_carries_events_in_order_past_its_bound() -> None:
    channel = EventChannel(max_bytes=200)
    sent = [frame("stdout", text=str(i)) for i in range(50)]

    async def produce() -> None:
        for event in sent:
            await channel.publish(event)
        await channel.close()

    received, _ = await asyncio.gather(drain(channel), produce())
    assert b"".join(received) == b"".join(sent)  # many events to a piece, as the reader found them


async def test_channel_pings_while_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "KEEPALIVE_SECONDS", 0.02)
    channel = EventChannel()

    async def produce_late() -> None:
        await asyncio.sleep(0.1)
        await channel.publish(frame("stdout", text="late"))
        await channel.close()

    received, _ = await asyncio.gather(drain(channel), produce_late())
    types = [json.loads(event)["type"] for event in received]
    assert types[-1] == "stdout" and set(types[:-1]) == {"ping"} and len(types) >= 2


async def test_channel_without_a_reader_detaches_instead_of_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "STALLED_READER_SECONDS", 0.05)
    channel = EventChannel(max_bytes=100)
    async with asyncio.timeout(5):
        for i in range(10):
            await channel.publish(frame("stdout", text=str(i)))
        await channel.close()
    assert channel.detached


async def test_channel_detached_by_its_reader_drops_later_events() -> None:
    channel = EventChannel(max_bytes=100)
    await channel.publish(frame("stdout", text="a"))
    events = channel.events()
    assert json.loads(await anext(events))["text"] == "a"
    await events.aclose()  # type: ignore[attr-defined]
    assert channel.detached
    async with asyncio.timeout(5):
        for _ in range(10):
            await channel.publish(frame("stdout", text="dropped"))
        await channel.close()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=90-1000", (90, 99)),
        ("bytes=100-", None),
        ("bytes=100-200", None),
    ],
)
def test_parse_range(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=a-b", "bytes="]
)
def test_parse_range_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_content_disposition() -> None:
    assert content_disposition("/w/report.csv") == 'attachment; filename="report.csv"'
    header = content_disposition("/w/résumé.pdf")
    assert 'filename="r_sum_.pdf"' in header
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in header
