"""A command's output through a real `osbox serve`, on both twins: exactly the bytes it wrote (osbox's
exact framing), the reference's line framing when asked for, and signals as a shell reports them."""

from __future__ import annotations

import json

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osbox import AsyncSandbox, CommandFailedError, LifecycleClient, Sandbox, output_is_exact
from osbox._wire import OUTPUT_FRAMING_HEADER
from osbox.server import LocalServer

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


def _writer(module_sandbox: Sandbox, chunks: list[bytes], fd: int = 1) -> str:
    """A command that writes `chunks` to `fd`, one write each, exactly as given (the bytes go up as
    a file: a command line is too small for them)."""
    path = f"/tmp/payload-{fd}"
    module_sandbox.execd.upload_file(path, b"".join(chunks))
    sizes = ",".join(str(len(chunk)) for chunk in chunks)
    script = f'import os\ndata = open("{path}", "rb").read()\nat = 0\nfor n in [{sizes}]:\n'
    script += f"    os.write({fd}, data[at : at + n]); at += n"
    return f"python3 -c '{script}'"


# Bytes that make framing hard: line endings of every kind, a lone CR, quotes and escapes, controls,
# UTF-8 whole and cut, bytes that are never UTF-8, and runs long enough to span pipe reads.
_pieces = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b'"',
            b"\\",
            b"\x00",
            b"\x1b[31m",
            b"\t",
            "é😀".encode(),
            b"\xe2\x82",
            b"\xac",
            b"\xff\xfe",
            b"\xed\xa0\x80",
            b"\xf0\x9f",
            b"x" * 70000,
            b"y\r" * 5000,
            bytes(range(256)),
        ]
    ),
)
_chunks = st.lists(st.lists(_pieces, max_size=6).map(b"".join), max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=_chunks)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # big examples' reprs
def test_any_bytes_written_come_back_identical(module_sandbox: Sandbox, chunks: list[bytes]) -> None:
    written = b"".join(chunks)
    result = module_sandbox.run(
        _writer(module_sandbox, chunks) + "; " + _writer(module_sandbox, chunks[::-1], fd=2)
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == written
    assert result.stderr_bytes == b"".join(chunks[::-1])
    # Bytes that are UTF-8 are plain text; the others are surrogate escapes, never replaced.
    assert result.stdout == written.decode("utf-8", "surrogateescape")


def test_output_is_exact_where_the_line_framing_is_not(module_sandbox: Sandbox) -> None:
    command = "printf 'abc'; printf 'x\\r\\ny\\rz\\n\\n'; printf '\\377\\376€'"
    exact = module_sandbox.run(command)
    assert exact.stdout == "abcx\r\ny\rz\n\n\udcff\udcfe€"
    assert exact.stdout_bytes == b"abcx\r\ny\rz\n\n\xff\xfe\xe2\x82\xac"
    # The reference's framing, asked for: one event per line; CR, LF and CRLF all end one.
    lines = module_sandbox.execd.run_command(command, framing="lines").run()
    assert lines.stdout == "abcx\ny\nz\n\n\ufffd\ufffd€\n"


def test_a_line_longer_than_a_read_comes_back_whole(module_sandbox: Sandbox) -> None:
    result = module_sandbox.run("head -c 3000000 /dev/zero | tr '\\0' x; printf '\\nend'")
    assert result.stdout == "x" * 3_000_000 + "\nend"


def test_the_default_http_framing_stays_the_reference_one(
    lifecycle_server: LocalServer, module_sandbox: Sandbox
) -> None:
    with LifecycleClient(lifecycle_server.base_url + "/v1", API_KEY) as lifecycle:
        endpoint = lifecycle.get_endpoint(module_sandbox.id, 44772)
    url = f"http://{endpoint.endpoint}/command"
    with httpx2.Client(headers=endpoint.headers, timeout=60) as http:
        plain = http.post(url, json={"command": "echo Hello; printf 'no newline'"})
        exact = http.post(
            url, json={"command": "echo Hello; printf 'no newline'"}, headers={OUTPUT_FRAMING_HEADER: "exact"}
        )
    assert plain.status_code == exact.status_code == 200, plain.text
    assert OUTPUT_FRAMING_HEADER not in plain.headers
    texts = [e["text"] for e in map(json.loads, plain.text.split("\n\n")[:-1]) if e["type"] == "stdout"]
    assert texts == ["Hello", "no newline"]
    assert exact.headers[OUTPUT_FRAMING_HEADER] == "exact"
    texts = [e["text"] for e in map(json.loads, exact.text.split("\n\n")[:-1]) if e["type"] == "stdout"]
    assert "".join(texts) == "Hello\nno newline"


def test_signals_are_128_plus_n_with_their_name(module_sandbox: Sandbox) -> None:
    killed = module_sandbox.run("kill -KILL $$")
    assert (killed.exit_code, killed.signal, killed.timed_out) == (137, "SIGKILL", False)
    terminated = module_sandbox.run("echo before; kill -TERM $$")
    assert (terminated.exit_code, terminated.signal, terminated.stdout) == (143, "SIGTERM", "before\n")
    assert terminated.error is not None and terminated.error.traceback == ["signal: terminated"]
    timed_out = module_sandbox.run("sleep 30", timeout=0.3)
    assert (timed_out.exit_code, timed_out.signal, timed_out.timed_out) == (137, "SIGKILL", True)
    with pytest.raises(CommandFailedError, match=r"timed out and was killed by SIGKILL \(exit 137\)"):
        module_sandbox.run("sleep 30", timeout=0.3, check=True)
    assert module_sandbox.run("exit 137").signal is None  # an exit status of 137 is no signal


def test_a_background_command_killed_reports_its_signal(module_sandbox: Sandbox) -> None:
    handle = module_sandbox.spawn("printf 'started\\377'; exec sleep 300")
    handle.kill()
    status = handle.status()
    assert (status.exit_code, status.signal, status.timed_out) == (143, "SIGTERM", False)
    finished = handle.wait()
    assert (finished.exit_code, finished.signal) == (143, "SIGTERM")
    assert finished.stdout_bytes == b"started\xff"  # the log keeps bytes that are not UTF-8


async def test_the_async_twin(lifecycle_server: LocalServer) -> None:
    async with await AsyncSandbox.create(
        base_url=lifecycle_server.base_url + "/v1", api_key=API_KEY
    ) as sandbox:
        result = await sandbox.run("printf 'a\\r\\nb\\377'; kill -TERM $$")
        assert result.stdout_bytes == b"a\r\nb\xff"
        assert (result.exit_code, result.signal) == (143, "SIGTERM")
        async with sandbox.execd.run_command("printf x") as stream:
            assert output_is_exact(stream.response)
            events = [event async for event in stream]
        assert [e.text for e in events if e.type == "stdout"] == ["x"]
        timed_out = await sandbox.run("sleep 30", timeout=0.3)
        assert (timed_out.exit_code, timed_out.signal, timed_out.timed_out) == (137, "SIGKILL", True)
