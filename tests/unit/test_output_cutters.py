"""The two output-run cutters, C (`osbox._speedups`) and pure Python, keep to one contract.

`test_perf_paths.py` checks each against the general decoder; here they are checked against each
other on arbitrary bytes, and on the edges of the frame grammar one by one.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osbox import _speedups
from osbox._decoder import _output_run_py

c_cut = _speedups.output_run

FRAME = b'{"type":"stdout","text":"%s","timestamp":%s}\n'

# Pieces that make frames, near-frames and garbage when strung together.
pieces = st.sampled_from(
    [
        b'{"type":"stdout","text":"',
        b'{"type":"stderr","text":"',
        b'{"type":"stdin","text":"',
        b'","timestamp":',
        b"}\n",
        b"}\r\n",
        b"\n",
        b"data: ",
        b"data:",
        b"\\",
        b'\\"',
        b'"',
        b"\\u00e9",
        b"\\ud83d",
        b"\\udcff",
        b"\\x",
        b"\t",
        b"0",
        b"-",
        b"1780000000000",
        b"1234567890123456789",
        b"plain text",
        "é → 😀".encode(),
        b"\xed\xa0\x80",  # a surrogate, as surrogatepass writes it
        b"\xff",
        b"event: x\n",
    ]
)


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(pieces, max_size=30), sse=st.booleans(), pos=st.integers(0, 40))
def test_c_and_python_cutters_agree_on_any_bytes(parts: list[bytes], sse: bool, pos: int) -> None:
    data = b"".join(parts)
    pos = min(pos, len(data))
    assert c_cut(data, pos, sse) == _output_run_py(data, pos, sse)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from(["stdout", "stderr"]), st.text(max_size=20), st.integers(-(10**18), 10**18)
        ),
        min_size=1,
        max_size=8,
    ),
    blank_lines=st.integers(0, 2),
    sse=st.booleans(),
)
def test_cutters_agree_on_well_formed_runs(
    frames: list[tuple[str, str, int]], blank_lines: int, sse: bool
) -> None:
    import json

    prefix = b"data: " if sse else b""
    data = b"".join(
        prefix
        + json.dumps(
            {"type": k, "text": t, "timestamp": s}, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8", "surrogatepass")
        + b"\n" * (1 + blank_lines)
        for k, t, s in frames
    )
    assert c_cut(data, 0, sse) == _output_run_py(data, 0, sse)


@pytest.mark.parametrize("cut", [c_cut, _output_run_py], ids=["c", "python"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (FRAME % (b"hi", b"1"), (len(FRAME % (b"hi", b"1")), ["stdout"], ["hi"], [1], False)),
        (FRAME % (b"", b"-0") + b"\n\n", (len(FRAME % (b"", b"-0")) + 2, ["stdout"], [""], [0], False)),
        # Escapes are resolved as json.loads resolves them; an escaped quote does not end the text.
        (FRAME % (b"a\\\\", b"3"), (len(FRAME % (b"a\\\\", b"3")), ["stdout"], ["a\\"], [3], True)),
        (FRAME % (b'a\\"b\\n', b"3"), (len(FRAME % (b'a\\"b\\n', b"3")), ["stdout"], ['a"b\n'], [3], True)),
        (
            FRAME % (b"\\ud83d\\ude00\\udcff\\u00E9", b"5"),
            (
                len(FRAME % (b"\\ud83d\\ude00\\udcff\\u00E9", b"5")),
                ["stdout"],
                ["\U0001f600\udcff\xe9"],
                [5],
                True,
            ),
        ),
        (FRAME % (b"x", b"9" * 18), (len(FRAME % (b"x", b"9" * 18)), ["stdout"], ["x"], [10**18 - 1], False)),
        (FRAME % ("é".encode(), b"4"), (len(FRAME % ("é".encode(), b"4")), ["stdout"], ["é"], [4], False)),
    ],
    ids=[
        "plain",
        "blank-lines",
        "escaped-backslash",
        "escaped-quote",
        "unicode-escapes",
        "18-digits",
        "utf-8",
    ],
)
def test_a_frame_is_cut(cut: object, data: bytes, expected: tuple[object, ...]) -> None:
    assert cut(data, 0, False) == expected  # type: ignore[operator]


@pytest.mark.parametrize("cut", [c_cut, _output_run_py], ids=["c", "python"])
@pytest.mark.parametrize(
    ("data", "sse"),
    [
        (FRAME % (b"x", b"9" * 19), False),  # may not fit an int64: left to json
        (FRAME % (b"x", b"01"), False),  # a leading zero JSON refuses
        (FRAME % (b"x", b"-"), False),
        (FRAME % (b"a\tb", b"1"), False),  # a raw control character
        (FRAME % (b"a\\", b"1"), False),  # a lone backslash escapes the quote: no end of text
        (FRAME % (b"a\\x", b"1"), False),  # an escape JSON refuses
        (FRAME % (b"a\\u12", b"1"), False),
        (FRAME % (b"\xff", b"1"), False),  # not UTF-8
        (FRAME.replace(b"}\n", b"}\r\n") % (b"x", b"1"), False),
        (FRAME.replace(b"}\n", b"}") % (b"x", b"1"), False),  # no newline yet
        (b"data: " + FRAME % (b"x", b"1"), True),  # an SSE event not dispatched yet
        (b" " + FRAME % (b"x", b"1"), False),
        (FRAME % (b"x", b"1"), True),  # bare, where SSE was asked for
    ],
)
def test_anything_else_is_no_run(cut: object, data: bytes, sse: bool) -> None:
    assert cut(data, 0, sse) == (0, [], [], [], False)  # type: ignore[operator]


@pytest.mark.parametrize("cut", [c_cut, _output_run_py], ids=["c", "python"])
def test_a_run_stops_at_the_first_other_line_and_one_bad_text_spoils_it(cut: object) -> None:
    good = FRAME % (b"a", b"1") + FRAME % (b"b", b"2")
    data = good + b'{"type":"ping"}\n' + FRAME % (b"c", b"3")
    assert cut(data, 0, False) == (len(good), ["stdout", "stdout"], ["a", "b"], [1, 2], False)  # type: ignore[operator]
    assert cut(data, len(data) - len(FRAME % (b"c", b"3")), False)[2] == ["c"]  # type: ignore[operator]
    for bad in (b"\xff", b"\x1b[0m"):
        assert cut(good + FRAME % (bad, b"3"), 0, False) == (0, [], [], [], False)  # type: ignore[operator]


def test_the_c_cutter_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        c_cut(b"")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="out of range"):
        c_cut(b"abc", 4, False)
    with pytest.raises(TypeError):
        c_cut("text", 0, False)  # type: ignore[arg-type]
    assert c_cut(memoryview(FRAME % (b"m", b"1")), 0, False)[2] == ["m"]  # type: ignore[arg-type]
