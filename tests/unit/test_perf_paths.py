"""The fast paths give exactly what the general paths give.

- The decoder's output-run path against the general path (`fast=False`), with each cutter (the C one
  in `osbox._speedups` and the pure-Python fallback), over arbitrary texts (escapes, control
  characters, quotes, surrogates, non-ASCII), framings, other events and garbage in between, and
  arbitrary chunk splits: same objects, same errors.
- `ExecutionBuilder.add_output` against `add` of each event.
- `Stream.run()` without a handler (runs folded without events) against iterating and folding.

And the lazy namespaces: `import osbox` loads no client, one client loads only its own modules.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import osbox
import osbox.models
from osbox import (
    ExecdClient,
    _speedups,  # built by `make install`; a missing C compiler must not go unnoticed
)
from osbox._decoder import EventDecoder, OutputCutter, OutputRun, StreamDecodeError, _output_run_py
from osbox.models.events import ExecutionBuilder, StreamEvent

Obj = dict[str, Any]

# Every code point, lone surrogates included (they travel as surrogatepass UTF-8 or \u escapes).
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=12)
plain_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=30
)
texts = st.one_of(plain_text, any_text, st.sampled_from(["", "\n", "\\", '"', "a\tb", "\r", "é中😀"]))
stamps = st.one_of(st.integers(-(2**63), 2**63), st.just(0))
kinds = st.sampled_from(["stdout", "stderr"])


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def output_json(draw: st.DrawFn) -> bytes:
    """One stdout/stderr event's JSON: mostly the compact shape, sometimes hand-built (maybe invalid)."""
    kind, text, stamp = draw(kinds), draw(texts), draw(stamps)
    style = draw(st.sampled_from(["compact", "compact", "ascii", "spaced", "raw", "reordered", "zeros"]))
    if style == "raw":  # the text unescaped: invalid JSON whenever it holds a quote or a control character
        return (
            b'{"type":"'
            + kind.encode()
            + b'","text":"'
            + encode(text)
            + b'","timestamp":'
            + str(stamp).encode()
            + b"}"
        )
    if style == "zeros":  # a number JSON refuses
        return b'{"type":"' + kind.encode() + b'","text":"x","timestamp":0' + str(abs(stamp)).encode() + b"}"
    obj: Obj = {"type": kind, "text": text, "timestamp": stamp}
    if style == "reordered":
        obj = {"text": text, "type": kind, "timestamp": stamp}
    separators = (", ", ": ") if style == "spaced" else (",", ":")
    return encode(json.dumps(obj, ensure_ascii=style == "ascii", separators=separators))


other_json = st.sampled_from(
    [
        b'{"type":"init","text":"abc","timestamp":1}',
        b'{"type":"ping","text":"pong","timestamp":2}',
        b'{"type":"execution_complete","execution_time":5,"timestamp":3}',
        b'{"code":"E","message":"late failure"}',
        b'{"type":"stdout","timestamp":4}',
        b"[1, 2]",
        b"{not json",
    ]
)


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    """One event in one of the framings, or a stray SSE / garbage line."""
    body = draw(st.one_of(output_json(), output_json(), other_json))
    style = draw(
        st.sampled_from(["bare", "ndjson", "sse", "sse_nospace", "crlf", "sse_event", "extra", "odd"])
    )
    if style == "bare":
        return body + b"\n\n"
    if style == "ndjson":
        return body + b"\n"
    if style == "sse":
        return b"data: " + body + b"\n\n"
    if style == "sse_nospace":
        return b"data:" + body + b"\n\n\n"
    if style == "crlf":
        return body + b"\r\n\r\n"
    if style == "sse_event":
        return b"event: stdout\nid: 7\ndata: " + body + b"\n\n"
    if style == "extra":  # a pending field the frame's meaning depends on
        return (
            draw(st.sampled_from([b"data: 1\n", b"event: x\n", b": comment\n", b"{\n", b"\n"])) + body + b"\n"
        )
    return draw(st.binary(max_size=8)) + b"\n"


CUTTERS = {"c": _speedups.output_run, "python": _output_run_py}


def run_decoder(chunks: list[bytes], cutter: OutputCutter | None) -> tuple[list[Obj], str | None]:
    """Every object decoded (runs expanded) and the error that ended the stream, if any.

    `cutter=None` is the general path alone.
    """
    decoder = EventDecoder(fast=cutter is not None, cutter=cutter)
    out: list[Obj] = []
    try:
        for chunk in chunks:
            for item in decoder.feed_items(chunk):
                out += item.objects() if isinstance(item, OutputRun) else [item]
        out += decoder.flush()
    except StreamDecodeError as exc:
        return out, str(exc)
    return out, None


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


@pytest.mark.parametrize("cutter", CUTTERS.values(), ids=CUTTERS.keys())
@settings(max_examples=400, deadline=None)
@given(frames=st.lists(frame(), max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_fast_decoding_is_identical_to_the_general_path(
    cutter: OutputCutter, frames: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(frames)
    assert run_decoder([data], cutter) == run_decoder([data], None)
    assert run_decoder(cut(data, cuts), cutter) == run_decoder(cut(data, cuts), None)


@pytest.mark.parametrize("cutter", CUTTERS.values(), ids=CUTTERS.keys())
@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(kinds, texts, stamps), min_size=1, max_size=20),
    sse=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=4),
)
def test_well_formed_output_decodes_through_runs(
    cutter: OutputCutter, events: list[tuple[str, str, int]], sse: bool, cuts: list[int]
) -> None:
    prefix = b"data: " if sse else b""
    data = b"".join(
        prefix
        + encode(
            json.dumps({"type": k, "text": t, "timestamp": s}, ensure_ascii=False, separators=(",", ":"))
        )
        + b"\n\n"
        for k, t, s in events
    )
    expected = [{"type": k, "text": t, "timestamp": s} for k, t, s in events]
    for chunks in ([data], cut(data, cuts)):
        assert run_decoder(chunks, cutter) == (expected, None) == run_decoder(chunks, None)


@pytest.mark.parametrize("cutter", CUTTERS.values(), ids=CUTTERS.keys())
@pytest.mark.parametrize(
    "text",
    [b"a\\", b'a\\","timestamp":1}\n\n{"type":"stdout","text":"b', b"\\u12", b"\\ud800", b"\\\\", b"\\t\\n"],
)
def test_escapes_decode_as_json_does_or_go_the_general_way(cutter: OutputCutter, text: bytes) -> None:
    data = b'{"type":"stdout","text":"' + text + b'","timestamp":1}\n\n'
    assert run_decoder([data], cutter) == run_decoder([data], None)


@pytest.mark.parametrize("cutter", CUTTERS.values(), ids=CUTTERS.keys())
def test_the_fast_path_takes_a_typical_stream(cutter: OutputCutter) -> None:
    frames = [b'{"type":"init","text":"c1","timestamp":1}\n\n']
    frames += [b'{"type":"stdout","text":"line %d","timestamp":%d}\n\n' % (i, i) for i in range(100)]
    frames.append(b'{"type":"stderr","text":"tab\\there","timestamp":7}\n\n')
    frames.append(b'{"type":"execution_complete","execution_time":3,"timestamp":9}\n\n')
    items = EventDecoder(cutter=cutter).feed_items(b"".join(frames))
    assert [type(item).__name__ for item in items] == ["dict", "OutputRun", "dict"]
    run = items[1]
    assert isinstance(run, OutputRun) and len(run) == 101 and not run.newline_free  # "\\t" was escaped
    assert run.texts[-1] == "tab\there" and run.kinds[-1] == "stderr" and run.timestamps[:2] == [0, 1]
    plain = EventDecoder(cutter=cutter).feed_items(b"".join(frames[1:-2]))
    assert len(plain) == 1 and isinstance(plain[0], OutputRun) and plain[0].newline_free


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(kinds, texts), max_size=12), chunks=st.booleans())
def test_add_output_folds_like_add(events: list[tuple[str, str]], chunks: bool) -> None:
    one_by_one, at_once = ExecutionBuilder(chunks=chunks), ExecutionBuilder(chunks=chunks)
    for kind, text in events:
        one_by_one.add(StreamEvent(kind, text))
    at_once.add_output([k for k, _ in events], [t for _, t in events])
    assert at_once.result() == one_by_one.result()
    if not any("\n" in t for _, t in events):  # what the decoder promises with newline_free
        promised = ExecutionBuilder(chunks=chunks)
        promised.add_output([k for k, _ in events], [t for _, t in events], newline_free=True)
        assert promised.result() == one_by_one.result()


def execd_over(body: bytes, chunk_size: int) -> ExecdClient:
    def handler(request: httpx2.Request) -> httpx2.Response:
        parts = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
        return httpx2.Response(200, content=iter(parts), request=request)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return ExecdClient("http://execd.invalid", "token", http_client=http, max_retries=0)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(st.tuples(kinds, texts), max_size=15),
    chunk_size=st.integers(1, 300),
    sse=st.booleans(),
)
def test_run_without_handler_folds_like_iterating(
    events: list[tuple[str, str]], chunk_size: int, sse: bool
) -> None:
    prefix = b"data: " if sse else b""
    frames = [b'{"type":"init","text":"cmd","timestamp":1}']
    frames += [
        encode(json.dumps({"type": k, "text": t, "timestamp": 2}, separators=(",", ":"))) for k, t in events
    ]
    frames.append(b'{"type":"execution_complete","execution_time":4,"timestamp":3}')
    body = b"".join(prefix + f + b"\n\n" for f in frames)
    with execd_over(body, chunk_size) as execd:
        folded = execd.run_command("x").run()
        seen: list[StreamEvent] = []
        with_handler = execd.run_command("x").run(seen.append)
        iterated = list(execd.run_command("x"))
    assert folded == with_handler
    assert seen == iterated
    assert [(e.type, e.text) for e in iterated[1:-1]] == events
    assert folded.id == "cmd" and folded.exit_code == 0 and folded.duration_ms == 4


# -- lazy namespaces ---------------------------------------------------------------------------------


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(done.stdout.split())


def test_import_osbox_loads_no_client_and_no_dependency() -> None:
    loaded = loaded_after("import osbox")
    assert not {"httpx2", "pydantic", "anyio", "osbox._base_client", "osbox.models"} & loaded


def test_one_client_loads_only_what_it_needs() -> None:
    loaded = loaded_after("from osbox import LifecycleClient")
    assert "osbox._lifecycle" in loaded and "osbox.models.lifecycle" in loaded
    assert (
        not {
            "osbox._async.egress",
            "osbox._sync.egress",
            "osbox._execd",
            "osbox._sync.execd",
            "osbox._async",
            "osbox.models.egress",
            "osbox.models.execd",
            "anyio",
        }
        & loaded
    )


@pytest.mark.parametrize("package", [osbox, osbox.models])
def test_every_public_name_resolves_and_is_listed(package: Any) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = package.Nope


@pytest.mark.parametrize("package", [osbox, osbox.models])
def test_lazy_table_type_checking_imports_and_all_agree(package: Any) -> None:
    # The lazy namespace lists each name three times (lazy table, imports for type checkers, __all__):
    # they must not drift apart.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(package))
    type_checking_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for statement in node.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }
    lazy_names = {name for names in package._EXPORTS.values() for name in names}
    public = set(package.__all__) - {"__version__"}
    assert type_checking_names == public
    assert lazy_names == public
