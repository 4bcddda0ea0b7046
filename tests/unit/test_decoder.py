"""The stream decoder: every framing parses, and no split of the bytes into chunks changes the result."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osbox import _decoder
from osbox._decoder import EventDecoder, StreamDecodeError

Obj = dict[str, Any]

json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=12), st.floats(allow_nan=False)
)
json_objects = st.dictionaries(
    st.text(max_size=6),
    st.one_of(
        json_values, st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=3), json_values)
    ),
    max_size=4,
)
event_names = st.sampled_from([None, "message", "stdout", "init", "execution_complete"])


def dumps(obj: Obj, **kwargs: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, **kwargs).encode()


def decode(chunks: list[bytes]) -> list[Obj]:
    decoder = EventDecoder()
    out: list[Obj] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- framings: (encode objects, expected objects) -------------------------------------------------


def bare_json(objects: list[Obj], names: list[str | None]) -> tuple[bytes, list[Obj]]:
    return b"".join(dumps(o) + b"\n\n" for o in objects), objects


def ndjson(objects: list[Obj], names: list[str | None]) -> tuple[bytes, list[Obj]]:
    return b"".join(dumps(o) + b"\n" for o in objects), objects


def pretty_bare_json(objects: list[Obj], names: list[str | None]) -> tuple[bytes, list[Obj]]:
    return b"".join(dumps(o, indent=1) + b"\n\n" for o in objects), objects


def sse(objects: list[Obj], names: list[str | None]) -> tuple[bytes, list[Obj]]:
    """SSE with event names, ids, comments, retry fields and data split over several lines."""
    parts: list[bytes] = [b": stream opened\n", b"retry: 3000\n\n"]
    expected: list[Obj] = []
    for index, (obj, name) in enumerate(zip(objects, names, strict=False)):
        if name is not None:
            parts.append(f"event: {name}\n".encode())
        parts.append(f"id: {index}\n".encode())
        if index % 3 == 1:
            parts.append(b": a comment between fields\n")
        lines = dumps(obj, indent=1).split(b"\n") if index % 2 else [dumps(obj)]
        sep = b"data:" if index % 4 == 3 else b"data: "
        parts += [sep + line + b"\n" for line in lines]
        parts.append(b"\n")
        shown = dict(obj)
        if name is not None and name != "message" and "type" not in shown:
            shown["type"] = name
        expected.append(shown)
    return b"".join(parts), expected


def crlf(framing: Callable[..., tuple[bytes, list[Obj]]]) -> Callable[..., tuple[bytes, list[Obj]]]:
    def encode(objects: list[Obj], names: list[str | None]) -> tuple[bytes, list[Obj]]:
        data, expected = framing(objects, names)
        return data.replace(b"\n", b"\r\n"), expected  # JSON escapes newlines: only line ends change

    return encode


FRAMINGS = [bare_json, ndjson, pretty_bare_json, sse, crlf(sse), crlf(bare_json), crlf(ndjson)]


@settings(max_examples=60, deadline=None)
@given(
    objects=st.lists(json_objects, max_size=6),
    names=st.lists(event_names, min_size=6, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    framing=st.sampled_from(FRAMINGS),
)
def test_any_chunking_yields_the_same_objects(
    objects: list[Obj], names: list[str | None], cuts: list[int], framing: Callable[..., Any]
) -> None:
    data, expected = framing(objects, names)
    assert decode([data]) == expected
    assert decode(split(data, cuts)) == expected
    assert decode([bytes([b]) for b in data]) == expected


@settings(max_examples=40, deadline=None)
@given(
    objects=st.lists(json_objects, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 10_000), max_size=8)
)
def test_a_final_event_without_terminator_is_flushed(objects: list[Obj], cuts: list[int]) -> None:
    data = b"\n".join(dumps(o) for o in objects)  # no newline after the last object
    assert decode(split(data, cuts)) == objects
    sse_data = b"".join(b"data: " + dumps(o) + b"\n\n" for o in objects[:-1]) + b"data: " + dumps(objects[-1])
    assert decode(split(sse_data, cuts)) == objects


# -- examples -------------------------------------------------------------------------------------


def test_event_name_fills_a_missing_type_only() -> None:
    data = (
        b'event: stdout\ndata: {"text": "hi"}\n\n'
        b'event: stderr\ndata: {"type": "error", "x": 1}\n\n'
        b'event: message\ndata: {"plain": true}\n\n'
        b'data: {"after": 1}\n\n'
    )
    assert decode([data]) == [
        {"text": "hi", "type": "stdout"},
        {"type": "error", "x": 1},
        {"plain": True},
        {"after": 1},
    ]


def test_multi_line_data_joins_with_newline() -> None:
    assert decode([b'data: {"a":\ndata: [1,\ndata: 2]}\n\n']) == [{"a": [1, 2]}]


def test_comments_retry_and_unknown_fields_are_ignored() -> None:
    data = b': ping\nretry: 10\nfoo: bar\nid: 7\ndata: {"k": 1}\n\n:\n\n'
    assert decode([data]) == [{"k": 1}]


def test_blank_lines_alone_yield_nothing() -> None:
    assert decode([b"\n\n\r\n\n"]) == []
    assert decode([]) == []


def test_mixed_framings_in_one_stream() -> None:
    data = b'{"type": "init"}\n\ndata: {"type": "stdout"}\n\n{"type": "a"}\n{"type": "b"}\n'
    assert [o["type"] for o in decode([data])] == ["init", "stdout", "a", "b"]


def test_invalid_json_is_an_error() -> None:
    with pytest.raises(StreamDecodeError, match="not valid JSON"):
        decode([b"data: {oops\n\n"])
    with pytest.raises(StreamDecodeError, match="not valid JSON"):
        decode([b"{not: json\n\n"])


def test_non_object_json_is_an_error() -> None:
    with pytest.raises(StreamDecodeError, match="not a JSON object"):
        decode([b"data: [1, 2]\n\n"])


def test_overlong_line_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decoder, "MAX_LINE_BYTES", 16)
    decoder = EventDecoder()
    assert decoder.feed(b'{"a": 1}\n') == [{"a": 1}]
    with pytest.raises(StreamDecodeError, match="longer than 16"):
        decoder.feed(b"data: " + b"x" * 32)
