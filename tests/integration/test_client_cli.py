"""`osbox ls | create | exec | upload | download | rm` against a real `osbox serve`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from osbox import LifecycleClient, NotFoundError
from osbox.cli import main
from osbox.server import LocalServer

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def osbox(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """Runs `osbox ARGS --url ... --api-key ...` in-process; returns (status, stdout, stderr)."""

    def run(command: str, *args: str) -> tuple[int, str, str]:
        # Options before the arguments: everything after `exec ID` is the command.
        status = main([command, "--url", server.base_url + "/v1", "--api-key", API_KEY, *args])
        out, err = capsys.readouterr()
        return status, out, err

    yield run


def test_a_sandbox_from_create_to_rm(osbox: Run, server: LocalServer, tmp_path: Path) -> None:
    run = osbox
    status, out, _ = run("create", "--env", "WHO=cli", "--metadata", "origin=cli-test", "--lifetime", "none")
    sandbox_id = out.strip()
    assert status == 0 and sandbox_id

    status, out, _ = run("ls", "--metadata", "origin=cli-test")
    lines = [line.split("\t") for line in out.splitlines()]
    assert status == 0 and lines[0] == ["id", "state", "image", "metadata", "expires"]
    assert [(row[0], row[1], row[3], row[4]) for row in lines[1:]] == [
        (sandbox_id, "Running", "origin=cli-test", "never")
    ]

    status, out, err = run("exec", sandbox_id, "echo $WHO; echo oops >&2; exit 3")
    assert (status, out, err) == (3, "cli\n", "oops\n")

    local = tmp_path / "in.bin"
    local.write_bytes(bytes(range(256)) * 1000)
    assert run("upload", sandbox_id, str(local), "/tmp/in.bin")[0] == 0
    assert run("download", sandbox_id, "/tmp/in.bin", str(tmp_path / "out.bin"))[0] == 0
    assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()

    assert run("rm", sandbox_id) == (0, f"deleted {sandbox_id}\n", "")
    with LifecycleClient(server.base_url + "/v1", API_KEY) as lifecycle, pytest.raises(NotFoundError):
        lifecycle.get_sandbox(sandbox_id)


def test_errors_are_one_line_and_status_1(osbox: Run, tmp_path: Path) -> None:
    run = osbox
    status, out, err = run("exec", "no-such-sandbox", "true")
    assert status == 1 and out == "" and err.startswith("osbox: ") and err.count("\n") == 1
    status, _, err = run("upload", "no-such-sandbox", str(tmp_path / "missing"), "/tmp/x")
    assert status == 1 and "is not a file" in err
    with pytest.raises(SystemExit, match="--env must be KEY=VALUE"):
        run("create", "--env", "novalue")
