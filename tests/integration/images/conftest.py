"""Fixtures for the image store: local registries with test images pushed, and a fresh store.

The registries and images are session-wide (building and pushing takes a second); each test gets
its own store in a temp dir, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbox.server.images.local_registry import LocalRegistry, local_registry
from osbox.server.images.platform import Platform, host_platform
from osbox.server.images.store import ImageStore, ImageStoreConfig

from .registry import (
    ImageSpec,
    OciLayoutBuilder,
    busybox_layer,
    directory,
    file,
    hardlink,
    symlink,
    tools_missing,
)

PRIVATE_USER = "alice"
PRIVATE_PASSWORD = "correct horse battery staple"
IMAGE_CONFIG = {
    "Env": ["PATH=/bin", "GREETING=hello from the image"],
    "WorkingDir": "/tmp",
    "User": "1000:1000",
    "Cmd": ["sh"],
}
#: A marker file a malicious layer tries to create outside its directory.
ESCAPE_NAME = "osbox-image-escape-marker"


def _other_platform() -> Platform:
    return Platform("linux", "arm64" if host_platform().architecture != "arm64" else "amd64")


@dataclass
class Registries:
    """The two test registries and where their images' layout and archives are."""

    public: LocalRegistry
    private: LocalRegistry
    layout: Path  # the OCI layout the test images were built in (ref names as below)


def _build(layout: Path) -> OciLayoutBuilder:
    builder = OciLayoutBuilder(layout)
    base = busybox_layer()
    builder.add("busybox", ImageSpec([base], config=IMAGE_CONFIG))
    app_layer = [directory("app"), file("app/hello", "hello\n")]
    builder.add("app", ImageSpec([base, app_layer], config=IMAGE_CONFIG))
    builder.add("zstd", ImageSpec([base, [file("zstd-layer", "z\n")]], compression="zstd"))
    builder.add_index(
        "multi",
        [
            ImageSpec([base, [file("platform", str(host_platform()))]]),
            ImageSpec([[file("platform", str(_other_platform()))]], platform=_other_platform()),
        ],
    )
    lower = [
        *base,
        directory("data"),
        file("data/keep", "kept\n"),
        file("data/gone", "deleted by the upper layer\n"),
        directory("opaque"),
        file("opaque/a", "a\n"),
        file("opaque/b", "b\n"),
    ]
    upper = [file("data/.wh.gone"), directory("opaque"), file("opaque/.wh..wh..opq"), file("opaque/c", "c\n")]
    builder.add("whiteout", ImageSpec([lower, upper]))
    escape = f"../../../../../../../../tmp/{ESCAPE_NAME}"
    builder.add("evil-dotdot", ImageSpec([base, [file(escape, "escaped")]]))
    builder.add("evil-symlink", ImageSpec([base, [symlink("out", "/tmp"), file(f"out/{ESCAPE_NAME}", "x")]]))
    builder.add("evil-hardlink", ImageSpec([base, [hardlink("passwd", "/etc/passwd")]]))
    return builder


@pytest.fixture(scope="package")
def registries() -> Iterator[Registries]:
    """A public and a password-protected registry with every test image pushed.

    Package-scoped: the registries stop once the image tests are done, so later tests that check
    that nothing they started is left running see no registry process."""
    reason = tools_missing()
    if reason is not None:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="osbox-test-images-"))
    try:
        layout = workdir / "layout"
        _build(layout)
        with local_registry() as public, local_registry(PRIVATE_USER, PRIVATE_PASSWORD) as private:
            for name in ("busybox", "app", "zstd", "multi", "whiteout", "evil-dotdot", "evil-symlink"):
                public.push(layout, name, f"{name}:1")
            public.push(layout, "evil-hardlink", "evil-hardlink:1")
            public.push(layout, "app", "app-docker-schema2:1", docker_schema2=True)
            private.push(layout, "busybox", "private/busybox:1")
            yield Registries(public, private, layout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def store_root() -> Iterator[Path]:
    """An empty directory for a store, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="osbox-image-store-"))
    try:
        yield root / "images"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(store_root: Path) -> ImageStore:
    """A fresh image store (no size pressure)."""
    if os.geteuid() != 0:
        pytest.skip("unpacking layers (ownership, device nodes, trusted.* xattrs) needs root")
    return ImageStore(ImageStoreConfig(root=store_root, pull_timeout_seconds=60))


def make_archive(layout: Path, ref_name: str, destination: Path, transport: str, name: str) -> Path:
    """`docker save`-style (`docker-archive`) or OCI (`oci-archive`) tar of one test image."""
    target = f"{transport}:{destination}:{name}"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:{ref_name}", target], check=True, timeout=60)
    return destination
