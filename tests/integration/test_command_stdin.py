"""A command's stdin (osbox's execd extension), against a real `osbox serve`, on both twins: `stdin=` as
bytes, str, a file and (async) iterators, byte-exact at size, end-of-file where the input ends;
`send_stdin` / `close_stdin` on a background command; the typed error from a server without it."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from osbox import (
    AsyncSandbox,
    ConflictError,
    ExecdClient,
    Sandbox,
    StdinNotSupportedError,
)
from osbox._wire import STDIN_HEADER
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime

BIG = 24 * 1024 * 1024 + 7  # several pipe-fulls and request chunks, not a round number


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_large_input_arrives_byte_exact(sandbox: Sandbox) -> None:
    data = os.urandom(BIG)
    result = sandbox.run("tee >(wc -c >&2) | sha256sum", stdin=data, check=True)
    assert result.stdout.split()[0] == _sha256(data) and int(result.stderr) == BIG


def test_end_of_file_comes_right_after_the_input(sandbox: Sandbox) -> None:
    # `cat` returns only at EOF; what follows it runs once the input has ended, never before.
    result = sandbox.run("cat; echo '<eof>'; read -r more || echo 'still eof'", stdin="a\nb", check=True)
    assert result.stdout == "a\nb<eof>\nstill eof\n"
    assert sandbox.run("wc -c", stdin=b"").stdout.strip() == "0"


def test_str_iterator_and_file_sources(sandbox: Sandbox, tmp_path: Path) -> None:
    assert sandbox.run("cat", stdin="héllo ✓\n").stdout == "héllo ✓\n"
    chunks = [os.urandom(n) for n in (1, 0, 70000, 3)]
    assert sandbox.run("sha256sum", stdin=iter(chunks)).stdout.split()[0] == _sha256(b"".join(chunks))
    local = tmp_path / "input.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    with local.open("rb") as file:
        assert sandbox.run("sha256sum", stdin=file).stdout.split()[0] == _sha256(local.read_bytes())
    assert sandbox.run("cat", stdin=io.BytesIO(b"from a BytesIO")).stdout == "from a BytesIO"  # exactly
    with pytest.raises(TypeError, match="must yield bytes"):
        sandbox.run("cat", stdin=iter(["text"]))  # type: ignore[arg-type]


def test_a_command_that_stops_reading_ends_normally(sandbox: Sandbox) -> None:
    endless = (b"y" * 65536 for _ in iter(int, 1))  # never ends: the feeder stops with the command
    result = sandbox.run("head -c 5", stdin=endless, check=True)
    assert result.stdout.startswith("yyyyy")


def test_send_stdin_and_close_stdin_on_a_background_cat(sandbox: Sandbox) -> None:
    handle = sandbox.spawn("cat; echo '<eof>'", stdin=True)
    handle.send_stdin("one\n")
    handle.send_stdin(b"two\n")
    wait_until(lambda: handle.logs() == "one\ntwo\n", what="cat to echo what was sent")
    assert handle.status().running  # stdin still open: cat waits for more
    handle.close_stdin()
    assert handle.wait(timeout=30, check=True).stdout == "one\ntwo\n<eof>\n"
    with pytest.raises(ConflictError, match="closed"):
        handle.send_stdin(b"late")


def test_spawn_with_input_feeds_it_then_closes(sandbox: Sandbox) -> None:
    data = os.urandom(5 * 1024 * 1024)
    handle = sandbox.spawn("sha256sum", stdin=data)
    assert handle.wait(timeout=60, check=True).stdout.split()[0] == _sha256(data)


def test_spawn_without_stdin_reads_an_empty_one(sandbox: Sandbox) -> None:
    handle = sandbox.spawn("cat; echo done")
    assert handle.wait(timeout=30).stdout == "done\n"
    with pytest.raises(ConflictError, match="without"):
        handle.send_stdin(b"x")


def test_a_server_without_the_extension_is_a_typed_error(sandbox: Sandbox) -> None:
    def as_the_reference(response: httpx2.Response) -> None:
        response.headers.pop(STDIN_HEADER, None)  # what OpenSandbox's execd answers

    endpoint = sandbox.execd.base_url
    headers = dict(sandbox.execd._headers)
    http = httpx2.Client(headers=headers, event_hooks={"response": [as_the_reference]})
    with http, ExecdClient(endpoint, http_client=http) as execd, pytest.raises(StdinNotSupportedError):
        execd.run_command("cat; echo unfed > /tmp/unfed", stdin=b"data").run()
    # The command it started was stopped, not left waiting.
    assert not sandbox.files.exists("/tmp/unfed") or sandbox.files.read("/tmp/unfed") == "unfed\n"
    assert "cat; echo unfed" not in sandbox.run("ps -eo args").stdout


async def test_async_twin_takes_async_iterators(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        data = os.urandom(BIG)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 1 << 20):
                yield data[start : start + (1 << 20)]

        result = await sandbox.run("sha256sum", stdin=chunks(), check=True)
        assert result.stdout.split()[0] == _sha256(data)
        assert (await sandbox.run("cat; echo '<eof>'", stdin=b"x")).stdout == "x<eof>\n"

        handle = await sandbox.spawn("cat", stdin=True)
        await handle.send_stdin(b"async\n")
        await handle.close_stdin()
        assert (await handle.wait(timeout=30, check=True)).stdout == "async\n"
