"""The image store against real local registries: pull, auth, platforms, archives, sharing, pruning."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox.server.images import (
    ArchiveError,
    AuthenticationFailed,
    ImageNotFound,
    PlatformNotFound,
    PullTimeout,
    RegistryUnreachable,
    StoreFull,
    UnsafeLayer,
)
from osbox.server.images.platform import Platform, host_platform
from osbox.server.images.skopeo import Credentials
from osbox.server.images.store import ImageStore, ImageStoreConfig, PullProgress
from tests.polling import wait_until

from .conftest import (
    ESCAPE_NAME,
    PRIVATE_PASSWORD,
    PRIVATE_USER,
    Registries,
    _other_platform,
    make_archive,
)


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _find(layers: tuple[Path, ...], relative: str) -> Path:
    """The topmost layer's copy of `relative` (what a merged overlay would show)."""
    for layer in reversed(layers):
        if (layer / relative).exists() or (layer / relative).is_symlink():
            return layer / relative
    raise AssertionError(f"{relative} is in no layer")


def test_pull_by_tag_unpacks_layers_and_reads_the_config(store: ImageStore, registries: Registries) -> None:
    reference = registries.public.ref("busybox:1")
    record = store.pull(reference)
    assert record.name == f"{reference}"
    assert record.platform == f"{host_platform().os}/{host_platform().architecture}"
    rootfs = store.rootfs(reference)
    busybox = _find(rootfs.layers, "bin/busybox")
    assert busybox.stat().st_mode & 0o755 == 0o755
    assert (rootfs.layers[0] / "bin/sh").readlink() == Path("busybox")
    assert (rootfs.layers[0] / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert rootfs.config.env == ("PATH=/bin", "GREETING=hello from the image")
    assert (rootfs.config.working_dir, rootfs.config.user) == ("/tmp", "1000:1000")
    assert (rootfs.config.entrypoint, rootfs.config.cmd) == (None, ("sh",))
    assert [image.name for image in store.list()] == [reference]
    assert stat.S_IMODE(rootfs.layers[0].stat().st_mode) == 0o755  # the image's "/" for every user
    # Layers hold the images' setuid binaries and device nodes: no host user but root reaches them.
    assert stat.S_IMODE(rootfs.layers[0].parent.parent.stat().st_mode) == 0o700


def test_pull_by_digest(store: ImageStore, registries: Registries) -> None:
    digest = registries.public.manifest_digest("busybox:1")
    reference = f"{registries.public.host}/busybox@{digest}"
    record = store.pull(reference)
    assert record.digest == digest
    assert store.rootfs(reference).digest == digest


def test_docker_schema2_manifests(store: ImageStore, registries: Registries) -> None:
    reference = registries.public.ref("app-docker-schema2:1")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    rootfs = store.ensure(reference)
    assert _find(rootfs.layers, "app/hello").read_text() == "hello\n"
    assert rootfs.config.working_dir == "/tmp"


def test_zstd_layers_are_unpacked(store: ImageStore, registries: Registries) -> None:
    rootfs = store.ensure(registries.public.ref("zstd:1"))
    assert _find(rootfs.layers, "zstd-layer").read_text() == "z\n"


def test_private_registry_right_password(store: ImageStore, registries: Registries) -> None:
    reference = registries.private.ref("private/busybox:1")
    rootfs = store.ensure(reference, credentials=Credentials(PRIVATE_USER, PRIVATE_PASSWORD))
    assert _find(rootfs.layers, "bin/busybox").is_file()


def test_private_registry_wrong_or_missing_password(store: ImageStore, registries: Registries) -> None:
    reference = registries.private.ref("private/busybox:1")
    wrong = Credentials(PRIVATE_USER, "not-the-password-xyzzy")
    with pytest.raises(AuthenticationFailed, match="refused the credentials") as refused:
        store.pull(reference, credentials=wrong)
    assert "xyzzy" not in str(refused.value) and "xyzzy" not in repr(wrong)
    with pytest.raises(AuthenticationFailed, match="requires credentials"):
        store.pull(reference)
    assert store.list() == []


def test_multi_arch_index_picks_this_machines_platform(store: ImageStore, registries: Registries) -> None:
    reference = registries.public.ref("multi:1")
    rootfs = store.ensure(reference)
    assert _find(rootfs.layers, "platform").read_text() == str(host_platform())
    other = store.ensure(reference, platform=_other_platform())  # re-pulled: a different platform
    assert _find(other.layers, "platform").read_text() == str(_other_platform())
    with pytest.raises(PlatformNotFound, match="s390x"):
        store.pull(reference, platform=Platform("linux", "s390x"))


def test_unreachable_registry_and_unknown_images_say_which(store: ImageStore, registries: Registries) -> None:
    with pytest.raises(RegistryUnreachable, match=r"127\.0\.0\.1:1 can't be reached"):
        store.pull("127.0.0.1:1/busybox:1")
    with pytest.raises(ImageNotFound, match="no such image or tag"):
        store.pull(registries.public.ref("no-such-image:1"))
    with pytest.raises(ImageNotFound, match="no such image or tag"):
        store.pull(registries.public.ref("busybox:no-such-tag"))


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_load_archives(store: ImageStore, registries: Registries, tmp_path: Path, transport: str) -> None:
    archive = make_archive(registries.layout, "app", tmp_path / "app.tar", transport, "example/app:2")
    # A docker-archive names its images (RepoTags); an OCI layout's ref names are tags only.
    records = store.load(archive, name="example/app:2" if transport == "oci-archive" else None)
    assert [record.name for record in records] == ["docker.io/example/app:2"]
    rootfs = store.rootfs("example/app:2")
    assert _find(rootfs.layers, "app/hello").read_text() == "hello\n"
    assert rootfs.config.working_dir == "/tmp"


def test_load_refuses_what_is_not_an_image_archive(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "not.tar").write_bytes(b"definitely not a tar")
    with pytest.raises(ArchiveError, match="not a readable image archive"):
        store.load(tmp_path / "not.tar")


def test_whiteouts_become_overlay_whiteouts(store: ImageStore, registries: Registries) -> None:
    rootfs = store.ensure(registries.public.ref("whiteout:1"))
    lower, upper = rootfs.layers
    gone = os.stat(upper / "data/gone", follow_symlinks=False)
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "opaque", "trusted.overlay.opaque") == b"y"
    assert not (upper / "data/.wh.gone").exists() and not (upper / "opaque/.wh..wh..opq").exists()
    assert (lower / "data/gone").is_file()  # the lower layer itself is untouched (it may be shared)


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("evil-dotdot:1", "'..' component"),
        ("evil-symlink:1", "symlink or not a directory"),
        ("evil-hardlink:1", "absolute path"),
    ],
)
def test_malicious_layers_are_refused(
    store: ImageStore, store_root: Path, registries: Registries, image: str, says: str
) -> None:
    with pytest.raises(UnsafeLayer, match=says):
        store.pull(registries.public.ref(image))
    assert not Path("/tmp", ESCAPE_NAME).exists()
    assert not any(p.name == ESCAPE_NAME for p in store_root.parent.rglob("*"))
    assert store.list() == []
    assert store.usage() == 0  # the refused image's blobs are gone too
    assert list((store_root / "staging").iterdir()) == []


def test_layers_are_shared_between_images(
    store: ImageStore, store_root: Path, registries: Registries
) -> None:
    base = store.ensure(registries.public.ref("busybox:1"))
    layers_before = _tree_bytes(store_root / "layers")
    app = store.ensure(registries.public.ref("app:1"))
    assert app.layers[0] == base.layers[0]  # the same directory, not a copy
    added = _tree_bytes(store_root / "layers") - layers_before
    assert added == len("hello\n")  # only the app's own layer's file


def test_concurrent_creates_of_one_image_pull_it_once(store: ImageStore, registries: Registries) -> None:
    reference = registries.public.ref("app:1")
    progress: list[list[PullProgress]] = [[], []]
    errors: list[BaseException] = []

    def ensure(slot: int) -> None:
        try:
            store.ensure(reference, on_progress=progress[slot].append)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=ensure, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(bool(events) for events in progress) == [False, True]  # one pulled, one waited


def test_rm_and_prune_leave_nothing(store: ImageStore, store_root: Path, registries: Registries) -> None:
    for image in ("busybox:1", "app:1", "whiteout:1"):
        store.ensure(registries.public.ref(image))
    store.remove(registries.public.ref("app:1"))
    result = store.prune()
    assert result.layers == 1  # app's own layer; the busybox base is still used
    assert store.rootfs(registries.public.ref("busybox:1")).layers[0].is_dir()
    for image in ("busybox:1", "whiteout:1"):
        store.remove(registries.public.ref(image))
    store.prune()
    assert list((store_root / "layers").iterdir()) == []
    assert list((store_root / "oci/blobs/sha256").iterdir()) == []
    assert list((store_root / "staging").iterdir()) == []
    assert store.usage() == 0
    with pytest.raises(ImageNotFound):
        store.remove(registries.public.ref("app:1"))


def test_size_cap_evicts_the_least_recently_used(store_root: Path, registries: Registries) -> None:
    probe = ImageStore(ImageStoreConfig(root=store_root / "probe"))
    probe.ensure(registries.public.ref("busybox:1"))
    one_image = probe.usage()
    store = ImageStore(ImageStoreConfig(root=store_root / "capped", max_bytes=int(one_image * 1.5)))
    store.ensure(registries.public.ref("busybox:1"))
    store.ensure(registries.public.ref("whiteout:1"))  # a different base: both don't fit
    assert [image.name for image in store.list()] == [registries.public.ref("whiteout:1")]
    assert store.usage() <= one_image * 1.5

    tiny = ImageStore(ImageStoreConfig(root=store_root / "tiny", max_bytes=1000))
    with pytest.raises(StoreFull, match="1000 bytes"):
        tiny.ensure(registries.public.ref("busybox:1"))
    assert tiny.list() == [] and tiny.usage() == 0


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A `host:port` that accepts TCP connections and never answers (a hung registry)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def test_a_registry_that_never_answers_times_out(store_root: Path, silent_registry: str) -> None:
    store = ImageStore(ImageStoreConfig(root=store_root, pull_timeout_seconds=2))
    with pytest.raises(PullTimeout):
        store.pull(f"{silent_registry}/busybox:1")
    assert store.list() == []


def _skopeo_pulling_from(host: str) -> bool:
    """Whether a skopeo process pulling from `host` runs now (so the store's writer lock is held)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended
        if arguments[0].endswith(b"skopeo") and any(host.encode() in a for a in arguments):
            return True
    return False


def test_a_stored_image_is_not_held_up_by_another_pull(
    store_root: Path, registries: Registries, silent_registry: str
) -> None:
    store = ImageStore(ImageStoreConfig(root=store_root, pull_timeout_seconds=20))
    store.ensure(registries.public.ref("busybox:1"))
    outcome: list[BaseException] = []

    def hung_pull() -> None:
        try:
            store.pull(f"{silent_registry}/x:1")
        except PullTimeout as error:
            outcome.append(error)

    puller = threading.Thread(target=hung_pull)
    puller.start()
    try:
        wait_until(lambda: _skopeo_pulling_from(silent_registry), timeout=10, what="the hung pull to start")
        done = threading.Event()

        def use_stored_image() -> None:
            store.ensure(registries.public.ref("busybox:1"))
            done.set()

        reader = threading.Thread(target=use_stored_image)
        reader.start()
        # Generous, yet well under the hung pull's 20 s: the stored image needs no writer lock.
        assert done.wait(timeout=10)
        assert puller.is_alive()
        reader.join()
    finally:
        puller.join(timeout=60)
    assert len(outcome) == 1
