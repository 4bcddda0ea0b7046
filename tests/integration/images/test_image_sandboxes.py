"""Sandboxes run the image their create names: a real `osbox serve`, real local registries.

The server here has an image store of its own (so that pulls, sharing and removal can be seen),
and pulls the test images of `conftest.py` from the registries on 127.0.0.1, by tag, by digest,
with credentials, from a multi-arch index and from a `docker save` archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import osbox
from osbox import Sandbox
from osbox.server import LocalServer

from ...polling import wait_until
from ..server_fixtures import API_KEY, lifecycle_client, requires_runtime
from .conftest import ESCAPE_NAME, PRIVATE_PASSWORD, PRIVATE_USER, Registries, make_archive

pytestmark = requires_runtime
IDLE = ["sleep", "100000"]


@pytest.fixture(scope="module")
def store_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="osbox-sandbox-images-"))
    try:
        yield root / "images"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(store_dir: Path) -> Iterator[LocalServer]:
    if os.geteuid() != 0:
        pytest.skip("sandboxes run images only when the server is root")
    with LocalServer(api_key=API_KEY, image_store_dir=store_dir, warm_pool_size=0) as srv:
        yield srv


@pytest.fixture
def api(server: LocalServer) -> Iterator[httpx2.Client]:
    with lifecycle_client(server) as client:
        yield client


@pytest.fixture
def create(api: httpx2.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a sandbox and wait until it leaves Pending; deleted afterwards."""
    created: list[str] = []

    def make(uri: str, entrypoint: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        body = {"image": {"uri": uri}, "resourceLimits": {"cpu": "1", "memory": "512Mi"}, **fields}
        if entrypoint is not None:
            body["entrypoint"] = entrypoint
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 202, response.text
        created.append(response.json()["id"])
        return _settled(api, response.json()["id"])

    yield make
    for sandbox_id in created:
        api.delete(f"/sandboxes/{sandbox_id}")


def _settled(api: httpx2.Client, sandbox_id: str) -> dict[str, Any]:
    """The sandbox's record once it has left Pending (a pull may take a while)."""

    def settled() -> dict[str, Any] | None:
        record: dict[str, Any] = api.get(f"/sandboxes/{sandbox_id}").json()
        return None if record["status"]["state"] == "Pending" else record

    return wait_until(settled, timeout=120, what=f"sandbox {sandbox_id} to leave Pending")


def _connect(server: LocalServer, sandbox_id: str) -> Sandbox:
    return Sandbox.connect(sandbox_id, base_url=server.base_url + "/v1", api_key=API_KEY, keep=True)


def _osbox_image(store_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`osbox image ARGS` on the server's store, as a user would run it beside the server."""
    environment = {**os.environ, "OSBOX_IMAGE_STORE": str(store_dir)}
    command = [sys.executable, "-m", "osbox.cli", "image", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)


def _running(record: dict[str, Any]) -> None:
    assert record["status"]["state"] == "Running", record["status"]


def test_pull_by_tag_and_by_digest_run_the_image(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    digest = registries.public.manifest_digest("app:1")
    for uri in (registries.public.ref("app:1"), f"{registries.public.host}/app@{digest}"):
        record = create(uri, IDLE)
        _running(record)
        assert f"Image {registries.public.host}/app" in record["status"]["message"]
        with _connect(server, record["id"]) as sandbox:
            assert sandbox.run("cat /etc/os-release").stdout.startswith('NAME="busybox test image"')
            assert sandbox.run("cat /app/hello").stdout == "hello\n"


def test_an_uncached_image_answers_pending_at_once_then_runs(
    api: httpx2.Client, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    response = api.post(
        "/sandboxes",
        json={
            "image": {"uri": registries.public.ref("zstd:1")},
            "entrypoint": IDLE,
            "resourceLimits": {"cpu": "1", "memory": "256Mi"},
        },
    )
    assert response.status_code == 202
    assert response.json()["status"]["state"] == "Pending"
    sandbox_id = response.json()["id"]
    try:
        _running(_settled(api, sandbox_id))
    finally:
        api.delete(f"/sandboxes/{sandbox_id}")


def test_private_registry_with_the_right_and_a_wrong_password(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    uri = registries.private.ref("private/busybox:1")
    # The wrong password first: once the image is stored, a create runs it without asking the
    # registry again (as a container engine's "if not present" pull policy).
    wrong = create(uri, IDLE, image={"uri": uri, "auth": {"username": PRIVATE_USER, "password": "wrong"}})
    assert wrong["status"]["state"] == "Failed"
    assert wrong["status"]["reason"] == "image_pull_failed"
    assert "refused the credentials" in wrong["status"]["message"]
    assert "wrong" not in wrong["status"]["message"]
    anonymous = create(uri, IDLE)
    assert "requires credentials" in anonymous["status"]["message"]
    auth = {"username": PRIVATE_USER, "password": PRIVATE_PASSWORD}
    right = create(uri, IDLE, image={"uri": uri, "auth": auth})
    _running(right)
    assert PRIVATE_PASSWORD not in str(right)


def test_unreachable_registry_and_unknown_image_fail_saying_which(
    registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    unknown = create(registries.public.ref("no-such-image:1"), IDLE)
    assert unknown["status"]["state"] == "Failed"
    assert "has no such image" in unknown["status"]["message"]
    unreachable = create("127.0.0.1:9/app:1", IDLE)  # the discard port: nothing listens
    assert unreachable["status"]["state"] == "Failed"
    assert "reach" in unreachable["status"]["message"].lower()


def test_a_multi_arch_index_runs_this_machines_platform(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    from osbox.server.images.platform import host_platform

    record = create(registries.public.ref("multi:1"), IDLE)
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        assert sandbox.files.read("/platform") == str(host_platform())


def test_a_docker_save_archive_loaded_by_the_cli_runs(
    server: LocalServer,
    store_dir: Path,
    registries: Registries,
    create: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    archive = make_archive(registries.layout, "app", tmp_path / "app.tar", "docker-archive", "saved/app:7")
    load = _osbox_image(store_dir, "load", str(archive))
    assert load.returncode == 0, load.stderr
    record = create("saved/app:7", IDLE)
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        assert sandbox.run("cat /app/hello").stdout == "hello\n"


def test_a_busybox_only_image_runs_commands_and_file_operations(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    record = create(registries.public.ref("busybox:1"), IDLE)
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        result = sandbox.run("echo $GREETING; id -u; test -e /usr/bin/python3 || echo no python")
        assert result.stdout == "hello from the image\n1000\nno python\n"
        sandbox.files.write("/tmp/note.txt", "written through execd\n")
        assert sandbox.run("cat /tmp/note.txt").stdout == "written through execd\n"
        assert sandbox.files.read("/etc/os-release").startswith('NAME="busybox test image"')
        names = {info.path for info in sandbox.files.list("/bin")}
        assert "/bin/busybox" in names
        with pytest.raises(osbox.APIError, match="the image has no python3"):
            sandbox.execd.create_context("python")


def test_image_config_env_workdir_and_user_are_honoured(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    entrypoint = ["sh", "-c", "{ pwd; id -u; id -g; echo $GREETING; } > /tmp/started; exec sleep 100000"]
    record = create(registries.public.ref("busybox:1"), entrypoint, env={"EXTRA": "from the request"})
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        started = sandbox.files.read("/tmp/started")
        assert started == "/tmp\n1000\n1000\nhello from the image\n"  # WorkingDir /tmp, User 1000:1000
        assert sandbox.run("echo $EXTRA $PATH").stdout == "from the request /bin\n"


def test_no_entrypoint_runs_the_images_cmd(
    registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    record = create(registries.public.ref("busybox:1"))  # Cmd ["sh"]: exits at once, as in Docker
    assert record["entrypoint"] == ["sh"]


def test_whiteouts_of_upper_layers_hide_lower_files(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    record = create(registries.public.ref("whiteout:1"), IDLE)
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        assert sandbox.run("ls /data; echo --; ls /opaque").stdout == "keep\n--\nc\n"


@pytest.mark.parametrize("name", ["evil-dotdot:1", "evil-symlink:1"])
def test_a_malicious_layer_is_refused(
    registries: Registries, create: Callable[..., dict[str, Any]], name: str
) -> None:
    record = create(registries.public.ref(name), IDLE)
    assert record["status"]["state"] == "Failed"
    assert record["status"]["reason"] == "image_pull_failed"
    assert not Path("/tmp", ESCAPE_NAME).exists()


def test_nothing_of_the_hosts_filesystem_is_visible(
    server: LocalServer, registries: Registries, create: Callable[..., dict[str, Any]]
) -> None:
    marker = Path(tempfile.mkdtemp(prefix="osbox-host-only-", dir="/var/tmp"))
    try:
        record = create(registries.public.ref("busybox:1"), IDLE)
        _running(record)
        assert server.config is not None
        host_paths = [
            Path(osbox.__file__).resolve().parent,  # the server's own source tree
            marker,
            server.config.data_dir,
            Path("/root"),
            Path("/usr/bin/python3"),
        ]
        with _connect(server, record["id"]) as sandbox:
            for path in host_paths:
                assert not sandbox.files.exists(str(path)), path
            # The image's top level, plus what every sandbox gets (/dev, /proc, /sys, /workspace).
            assert sandbox.run("ls /").stdout.split() == [
                "bin",
                "dev",
                "etc",
                "proc",
                "sys",
                "tmp",
                "workspace",
            ]
    finally:
        shutil.rmtree(marker)


def test_the_disk_cap_is_hit_with_a_clear_error(
    server: LocalServer, create: Callable[..., dict[str, Any]]
) -> None:
    record = create(
        "python:3.11", IDLE, resourceLimits={"cpu": "1", "memory": "512Mi", "ephemeral-storage": "64Mi"}
    )
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        result = sandbox.run("head -c 200000000 /dev/zero > /workspace/big")
        assert result.exit_code != 0
        assert "No space left on device" in result.stderr


def test_a_snapshot_restores_the_writable_layer_over_the_same_image(
    server: LocalServer, api: httpx2.Client, create: Callable[..., dict[str, Any]]
) -> None:
    record = create("python:3.11", IDLE)
    _running(record)
    with _connect(server, record["id"]) as sandbox:
        sandbox.run("echo changed > /workspace/mark && rm /home/sandbox/.bashrc")
    snapshot = api.post(f"/sandboxes/{record['id']}/snapshots", json={}).json()
    wait_until(
        lambda: api.get(f"/snapshots/{snapshot['id']}").json()["status"]["state"] == "Ready", timeout=120
    )
    response = api.post("/sandboxes", json={"snapshotId": snapshot["id"], "entrypoint": IDLE})
    assert response.status_code == 202, response.text
    restored = wait_until(
        lambda: (
            (r := api.get(f"/sandboxes/{response.json()['id']}").json())["status"]["state"] != "Pending" and r
        ),
        timeout=120,
    )
    try:
        _running(restored)
        with _connect(server, restored["id"]) as sandbox:
            # The deletion of a file of the image (an overlayfs whiteout) is restored too.
            assert sandbox.run("cat /workspace/mark; test -e ~/.bashrc || echo bashrc gone").stdout == (
                "changed\nbashrc gone\n"
            )
            assert sandbox.run("grep -c Debian /etc/os-release").stdout.strip() != "0"
    finally:
        api.delete(f"/sandboxes/{restored['id']}")
        api.delete(f"/snapshots/{snapshot['id']}")


def test_layers_are_shared_and_nothing_is_left_after_delete_and_image_rm(
    server: LocalServer,
    api: httpx2.Client,
    store_dir: Path,
    registries: Registries,
    create: Callable[..., dict[str, Any]],
) -> None:
    from osbox.server.images.store import ImageStore, ImageStoreConfig

    store = ImageStore(ImageStoreConfig(root=store_dir))
    uri = registries.public.ref("app-docker-schema2:1")
    first = create(uri, IDLE)
    _running(first)
    layers = set(store_dir.joinpath("layers").iterdir())
    usage = store.usage()
    second = create(uri, IDLE)
    _running(second)
    assert set(store_dir.joinpath("layers").iterdir()) == layers and store.usage() == usage
    in_use = _osbox_image(store_dir, "rm", uri)
    assert in_use.returncode != 0 and "used by a running sandbox" in in_use.stderr
    for record in (first, second):
        assert api.delete(f"/sandboxes/{record['id']}").status_code == 204
    assert server.config is not None
    for record in (first, second):
        state_dir = server.config.sandboxes_dir / record["id"]
        assert not state_dir.exists() or not any(state_dir.joinpath("root").iterdir())
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(server.config.data_dir) not in mounts and str(store_dir) not in mounts
    removed = _osbox_image(store_dir, "rm", uri)
    assert removed.returncode == 0, removed.stderr
    pruned = _osbox_image(store_dir, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert uri not in {record.name for record in store.list()}
