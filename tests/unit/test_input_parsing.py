"""The request parsers' edges: strict JSON, number ranges, and the execve size check, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from osbox.server._body import MAX_JSON_DEPTH, BadBody, parse_json
from osbox.server.execd.errors import ExecdError
from osbox.server.execd.inputs import INT32_MAX, check_exec_size, optional_int
from osbox.server.lifecycle.errors import ApiError
from osbox.server.lifecycle.validation import (
    MAX_SANDBOX_TIMEOUT_SECONDS,
    _parse_timeout,
    parse_cpu,
    parse_memory,
    parse_query_int,
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_nested_up_to_the_limit_is_parsed_and_one_level_more_is_refused() -> None:
    assert parse_json(_nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(BadBody, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        parse_json(_nested(MAX_JSON_DEPTH + 1))
    deep_objects = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(BadBody, match="nested deeper"):
        parse_json(deep_objects)
    with pytest.raises(BadBody, match="nested deeper"):  # past the recursion limit, not a RecursionError
        parse_json(_nested(200_000))


def test_brackets_inside_strings_and_wide_documents_are_not_depth() -> None:
    assert parse_json(json.dumps({"text": "[" * 1000}).encode()) == {"text": "[" * 1000}
    wide: list[list[list[int]]] = [[[]] for _ in range(1000)]
    assert parse_json(json.dumps(wide).encode()) == wide


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'{"t": -Infinity}', b"1e400", b"[-1e999]"])
def test_json_numbers_must_be_finite(raw: bytes) -> None:
    with pytest.raises(BadBody, match="not valid JSON"):
        parse_json(raw)


def test_json_error_names_the_document() -> None:
    with pytest.raises(BadBody, match=r"^the metadata part is not valid JSON"):
        parse_json(b"{", "the metadata part")


@pytest.mark.parametrize(
    ("text", "cores"), [("500m", 0.5), ("2", 2.0), ("0.25", 0.25), ("65536", 65536.0), ("1m", 0.001)]
)
def test_cpu_quantities_in_range(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("65537", "at most 65536 cores"),
        ("0", "greater than zero"),
        ("9" * 400, "is not a CPU quantity"),
        ("\u00b2", "is not a CPU quantity"),
        ("1e3", "is not a CPU quantity"),
    ],
)
def test_cpu_quantities_out_of_range(text: str, message: str) -> None:
    with pytest.raises(ApiError, match=message):
        parse_cpu(text)


def test_memory_quantities_at_their_bounds() -> None:
    assert parse_memory("4Mi") == 4 * 2**20
    assert parse_memory("1Ei") == 2**60
    assert parse_memory("1.5Gi") == 3 * 2**29
    for text, message in [("1025Pi", "at most 1Ei"), ("3Mi", "at least 4Mi"), ("9" * 400, "not a memory")]:
        with pytest.raises(ApiError, match=message):
            parse_memory(text)


@pytest.mark.parametrize("value", [MAX_SANDBOX_TIMEOUT_SECONDS, 600, 600.0, None])
def test_sandbox_timeouts_in_range(value: Any) -> None:
    assert _parse_timeout(value, 60, None) == value


@pytest.mark.parametrize(
    ("value", "maximum", "message"),
    [
        (MAX_SANDBOX_TIMEOUT_SECONDS + 1, None, "at most 3153600000 seconds"),
        (2**63, None, "at most"),
        (1e12, None, "at most"),
        (float("inf"), None, "integer number of seconds"),
        (float("nan"), None, "integer number of seconds"),
        (601, 600, "at most 600 seconds"),
        (59, None, "at least 60"),
        (True, None, "integer number of seconds"),
    ],
)
def test_sandbox_timeouts_out_of_range(value: Any, maximum: int | None, message: str) -> None:
    with pytest.raises(ApiError, match=message):
        _parse_timeout(value, 60, maximum)


def test_query_integers() -> None:
    assert parse_query_int(None, "page", 1) == 1
    assert parse_query_int("", "page", 1) == 1
    assert parse_query_int("123456789", "page", 1) == 123456789
    for text in ["1234567890", "\u00b2", "1e3", "1.0", "9" * 5000]:
        with pytest.raises(ApiError, match="page must be an integer of at most 9 digits"):
            parse_query_int(text, "page", 1)


def test_execd_integers() -> None:
    assert optional_int("42", "n") == 42
    assert optional_int(7.0, "n") == 7
    assert optional_int(INT32_MAX, "uid", maximum=INT32_MAX) == INT32_MAX
    for value in [INT32_MAX + 1, -1, "\u00b2", "1" * 31, 1.5, True, "x"]:
        with pytest.raises(ExecdError):
            optional_int(value, "uid", maximum=INT32_MAX)


def test_exec_size_allows_the_largest_argument_and_refuses_one_byte_more() -> None:
    check_exec_size(["bash", "-c", "a" * 131071], {})
    with pytest.raises(ExecdError, match="at most 131071 bytes per argument"):
        check_exec_size(["bash", "-c", "a" * 131072], {})
    with pytest.raises(ExecdError, match="at most 131071 bytes per argument"):
        check_exec_size(["true"], {"K": "v" * 131070})  # "K=" + value is the argument
    with pytest.raises(ExecdError, match="bytes of arguments and environment together"):
        check_exec_size(["true"], {f"K{i}": "v" * 100_000 for i in range(40)})
