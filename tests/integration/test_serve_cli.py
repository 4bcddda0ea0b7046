"""`osbox serve` as a real process: serves, warns, shuts down on signals, keeps sandboxes running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from osbox import Sandbox, cli
from osbox._wire import ON_DISCONNECT_HEADER
from osbox.server import LocalServer
from tests.integration.server_fixtures import lifecycle_client, requires_runtime
from tests.polling import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """An `osbox serve` child process; always terminated (then killed) at the end of the test."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        argv = [sys.executable, "-m", "osbox.cli", "serve", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                return httpx2.get(f"{self.url}/health").status_code == 200
            except httpx2.TransportError:
                return False

        wait_until(healthy, timeout=60, what="osbox serve to answer /health")

    def stop(self, signum: int) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Tracked
    for server in started:
        server.close()


@requires_runtime
def test_serve_keeps_sandboxes_for_the_next_start(serve: type[Serve], reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    server = serve("--data-dir", str(data_dir), "--api-key", "cli-key")
    server.wait_healthy()
    headers = {"OPEN-SANDBOX-API-KEY": "cli-key"}
    assert httpx2.get(f"{server.url}/v1/sandboxes").status_code == 401
    created = httpx2.post(
        f"{server.url}/v1/sandboxes",
        json={"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"]},
        headers=headers,
        timeout=60,
    )
    assert created.status_code == 202 and created.json()["status"]["state"] == "Running"
    sandbox_id = created.json()["id"]
    code, stderr = server.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "cli-key" not in stderr  # the API key is never logged

    # A later server on the same data dir re-adopts it (and, being a LocalServer, destroys it at exit).
    with (
        LocalServer(data_dir=data_dir, api_key="cli-key") as local,
        lifecycle_client(local, api_key="cli-key") as api,
    ):
        assert api.get(f"/sandboxes/{sandbox_id}").json()["status"]["state"] == "Running"


@requires_runtime
def test_serve_warns_without_api_key_off_loopback_and_reads_key_from_env(
    serve: type[Serve], reachable_dir: Path
) -> None:
    open_server = serve(
        "--host", "0.0.0.0", "--data-dir", str(reachable_dir / "a"), env={"OSBOX_API_KEY": ""}
    )
    open_server.wait_healthy()
    code, stderr = open_server.stop(signal.SIGINT)
    assert code == 0 and "WITHOUT an API key" in stderr

    keyed = serve("--data-dir", str(reachable_dir / "b"), env={"OSBOX_API_KEY": "env-key"})
    keyed.wait_healthy()
    assert httpx2.get(f"{keyed.url}/v1/sandboxes").status_code == 401
    assert (
        httpx2.get(f"{keyed.url}/v1/sandboxes", headers={"OPEN-SANDBOX-API-KEY": "env-key"}).status_code
        == 200
    )
    code, stderr = keyed.stop(signal.SIGTERM)
    assert code == 0 and "WITHOUT an API key" not in stderr and "env-key" not in stderr


def test_serve_refuses_non_linux(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cli.main(["serve"]) == 2
    assert "needs Linux" in capsys.readouterr().err


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        cli.main([])
    assert missing.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["serve", "--port", "not-a-number"])
    assert "invalid int value" in capsys.readouterr().err


@requires_runtime
def test_serve_reads_the_api_key_from_a_file_and_warns_when_it_is_on_the_command_line(
    serve: type[Serve], reachable_dir: Path
) -> None:
    key_file = reachable_dir / "api.key"
    key_file.write_text("file-key\n")
    key_file.chmod(0o600)
    from_file = serve(
        "--data-dir", str(reachable_dir / "a"), "--api-key-file", str(key_file), env={"OSBOX_API_KEY": ""}
    )
    from_file.wait_healthy()
    assert httpx2.get(f"{from_file.url}/v1/sandboxes").status_code == 401
    headers = {"OPEN-SANDBOX-API-KEY": "file-key"}
    assert httpx2.get(f"{from_file.url}/v1/sandboxes", headers=headers).status_code == 200
    code, stderr = from_file.stop(signal.SIGTERM)
    assert code == 0 and "file-key" not in stderr and "visible" not in stderr

    on_command_line = serve("--data-dir", str(reachable_dir / "b"), "--api-key", "argv-key")
    on_command_line.wait_healthy()
    headers = {"OPEN-SANDBOX-API-KEY": "argv-key"}
    assert httpx2.get(f"{on_command_line.url}/v1/sandboxes", headers=headers).status_code == 200
    code, stderr = on_command_line.stop(signal.SIGTERM)
    assert code == 0 and "--api-key is visible to every user" in stderr and "argv-key" not in stderr


def test_serve_refuses_a_data_dir_others_can_write_and_an_unreadable_key_file(
    serve: type[Serve], reachable_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_dir = reachable_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    refused = serve("--data-dir", str(open_dir))
    _, stderr = refused.process.communicate(timeout=60)
    assert refused.process.returncode == 2 and f"{open_dir} is writable by other users" in stderr
    assert not (open_dir / "osbox.db").exists()

    missing = reachable_dir / "no-such-key"
    assert cli.main(["serve", "--data-dir", str(reachable_dir / "ok"), "--api-key-file", str(missing)]) == 2
    assert "cannot read --api-key-file" in capsys.readouterr().err


@requires_runtime
def test_serve_keep_on_disconnect_is_the_default_a_request_can_override(
    serve: type[Serve], reachable_dir: Path
) -> None:
    server = serve("--data-dir", str(reachable_dir / "data"), "--api-key", "k", "--keep-on-disconnect")
    server.wait_healthy()
    with Sandbox.create(base_url=server.url + "/v1", api_key="k") as sandbox:
        for asked, applied in ((None, "keep"), (True, "kill")):
            with sandbox.execd.run_command("true", kill_on_disconnect=asked) as stream:
                assert stream.response is not None
                assert stream.response.headers[ON_DISCONNECT_HEADER] == applied
