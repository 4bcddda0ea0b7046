"""`osbox image pull | load | ls | rm | prune`, run as a user would, into a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PRIVATE_PASSWORD, PRIVATE_USER, Registries, make_archive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")


def osbox(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "osbox.cli", "image", args[0], "--data-dir", str(data_dir), *args[1:]]
    # The data dir's own store, not the one the test session shares with its servers.
    environment = {key: value for key, value in os.environ.items() if key != "OSBOX_IMAGE_STORE"}
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, env=environment)


def test_pull_ls_rm_prune(store_root: Path, registries: Registries) -> None:
    data_dir = store_root.parent / "data"
    reference = registries.public.ref("app:1")
    pulled = osbox(data_dir, "pull", reference)
    assert pulled.returncode == 0, pulled.stderr
    name, digest, _size = pulled.stdout.strip().split("\t")
    assert (name, digest[:7]) == (reference, "sha256:")
    assert "Copying blob sha256:" in pulled.stderr and "so far" in pulled.stderr  # plain progress lines

    listed = osbox(data_dir, "ls")
    assert listed.stdout.splitlines()[0] == "name\tdigest\tsize\tplatform"
    assert listed.stdout.splitlines()[1].startswith(f"{reference}\t{digest}\t")

    assert osbox(data_dir, "rm", reference).stdout == f"removed {reference}\n"
    pruned = osbox(data_dir, "prune")
    assert pruned.stdout.startswith("removed 4 blobs and 2 layers")  # manifest, config, 2 layers
    assert list((data_dir / "images/layers").iterdir()) == []


def test_private_pull_with_password_on_stdin(store_root: Path, registries: Registries) -> None:
    reference = registries.private.ref("private/busybox:1")
    data_dir = store_root.parent / "data"
    wrong = osbox(data_dir, "pull", reference, "--username", PRIVATE_USER, "--password-stdin", stdin="nope\n")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines()[-1].endswith("refused the credentials given")
    right = osbox(
        data_dir, "pull", reference, "--username", PRIVATE_USER, "--password-stdin", stdin=PRIVATE_PASSWORD
    )
    assert right.returncode == 0, right.stderr
    assert PRIVATE_PASSWORD not in right.stdout + right.stderr


def test_load_and_errors(store_root: Path, registries: Registries, tmp_path: Path) -> None:
    data_dir = store_root.parent / "data"
    archive = make_archive(registries.layout, "busybox", tmp_path / "bb.tar", "docker-archive", "saved/bb:3")
    loaded = osbox(data_dir, "load", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("docker.io/saved/bb:3\tsha256:")
    missing = osbox(data_dir, "rm", "no/such:image")
    assert missing.returncode == 1
    assert missing.stderr == "osbox: no image docker.io/no/such:image in the store\n"
    bad = osbox(data_dir, "pull", "Not A Reference")
    assert bad.returncode == 1 and "invalid" in bad.stderr and "Traceback" not in bad.stderr
