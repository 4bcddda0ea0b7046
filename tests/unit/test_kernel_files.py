"""A kernel directory's files are used only when they are what the sandbox's own kernel makes."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox.server.execd.errors import ExecdError
from osbox.server.execd.kernel_files import CHANNELS, MAX_CONNECTION_FILE_BYTES, KernelFiles, confined_client

ME = range(os.getuid(), os.getuid() + 1)
PORTS = {f"{channel}_port": index + 1 for index, channel in enumerate(CHANNELS)}


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Iterator[Path]:
    """A kernel dir as a well-behaved kernel leaves it: the connection file and bound sockets."""
    directory = tmp_path / "kernels"
    directory.mkdir()
    info = {**PORTS, "key": "secret", "signature_scheme": "hmac-sha256"}
    (directory / "k.json").write_text(json.dumps(info))
    sockets = []
    for port in PORTS.values():
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(directory / f"k-{port}"))
        sockets.append(sock)
    yield directory
    for sock in sockets:
        sock.close()


def _files(directory: Path, owners: range = ME) -> KernelFiles:
    return KernelFiles(os.open(directory, os.O_RDONLY | os.O_DIRECTORY), owners)


def _refusal(directory: Path, owners: range = ME) -> str:
    with pytest.raises(ExecdError) as refused:
        files = _files(directory, owners)
        try:
            files.ready("k")
        finally:
            files.close()
    assert refused.value.status == 500
    return str(refused.value)


def test_a_well_made_kernel_dir_is_used_through_its_fds(kernel_dir: Path) -> None:
    files = _files(kernel_dir)
    try:
        assert files.ready("k")
        assert set(files.sockets) == set(CHANNELS)
        shell = files.sockets["shell"]
        assert os.stat(f"/proc/self/fd/{shell}").st_ino == (kernel_dir / "k-1").stat().st_ino
        client = confined_client(files)
        assert client._make_url("hb") == f"ipc:///proc/self/fd/{files.sockets['hb']}"
        assert client.session.key == b"secret"
    finally:
        files.close()


def test_not_ready_while_the_kernel_is_still_making_its_files(kernel_dir: Path) -> None:
    (kernel_dir / "k-5").unlink()  # the heartbeat binds in a thread of its own, maybe last
    files = _files(kernel_dir)
    try:
        assert not files.ready("k")
        with socket.socket(socket.AF_UNIX) as heartbeat:
            heartbeat.bind(str(kernel_dir / "k-5"))
            assert files.ready("k")
    finally:
        files.close()
    (kernel_dir / "k.json").write_text('{"shell_port": 1, ')  # half-written
    files = _files(kernel_dir)
    try:
        assert not files.ready("k")
    finally:
        files.close()


def test_a_symlinked_socket_is_refused(kernel_dir: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as host:
        host.bind(str(tmp_path / "host.sock"))
        (kernel_dir / "k-3").unlink()
        (kernel_dir / "k-3").symlink_to(tmp_path / "host.sock")
        assert "symlink" in _refusal(kernel_dir)


def test_a_symlinked_or_fifo_connection_file_is_refused(kernel_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text((kernel_dir / "k.json").read_text())
    (kernel_dir / "k.json").unlink()
    (kernel_dir / "k.json").symlink_to(tmp_path / "elsewhere.json")
    assert "symlink" in _refusal(kernel_dir)
    (kernel_dir / "k.json").unlink()
    os.mkfifo(kernel_dir / "k.json")  # opened non-blocking: refused, not waited on
    assert "not a regular file" in _refusal(kernel_dir)


def test_files_not_made_by_the_sandbox_are_refused(kernel_dir: Path) -> None:
    assert "not by the sandbox" in _refusal(kernel_dir, owners=range(1, 2))
    os.chown(kernel_dir / "k-2", 4242, 4242)
    message = _refusal(kernel_dir)
    assert "host uid 4242" in message and "k-2" in message


def test_a_regular_file_where_a_socket_belongs_is_refused(kernel_dir: Path) -> None:
    (kernel_dir / "k-4").unlink()
    (kernel_dir / "k-4").write_text("not a socket")
    assert "not a unix socket" in _refusal(kernel_dir)


@pytest.mark.parametrize(
    "info",
    [
        {**PORTS, "key": "k", "signature_scheme": "md5"},
        {**PORTS, "key": "k", "shell_port": "1; rm -rf /"},
        {**PORTS, "key": "k", "hb_port": True},
        {**PORTS, "key": "k", "iopub_port": -1},
        {**PORTS, "key": "k", "padding": "x" * MAX_CONNECTION_FILE_BYTES},
    ],
)
def test_odd_connection_files_are_refused(kernel_dir: Path, info: dict[str, object]) -> None:
    (kernel_dir / "k.json").write_text(json.dumps(info))
    assert "refused" in _refusal(kernel_dir)


def test_remove_unlinks_the_kernels_files_and_no_symlinks_target(kernel_dir: Path, tmp_path: Path) -> None:
    (kernel_dir / "other.json").write_text("{}")  # another kernel's: left alone
    files = _files(kernel_dir)
    assert files.ready("k")
    files.remove()
    assert sorted(p.name for p in kernel_dir.iterdir()) == ["other.json"]
    assert files.dir_fd == -1 and not files.sockets  # closed too

    # A name the sandbox replaced with a symlink: the link goes, what it points to stays.
    outside = tmp_path / "host-file"
    outside.write_text("keep me")
    (kernel_dir / "k.json").symlink_to(outside)
    files = _files(kernel_dir)
    files.name = "k"  # asked about, never ready
    files.remove()
    assert not (kernel_dir / "k.json").is_symlink() and outside.read_text() == "keep me"
