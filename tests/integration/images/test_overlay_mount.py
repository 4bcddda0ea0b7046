"""The layer list `rootfs()` returns mounts as an overlay that shows the image as its author meant it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from osbox.server.images.store import ImageStore

from .conftest import Registries


def _overlay_missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting an overlay with trusted.* whiteouts needs root"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem"
    return None


@pytest.mark.skipif(_overlay_missing() is not None, reason=_overlay_missing() or "")
def test_layers_mount_as_an_overlay_that_runs_the_image(store: ImageStore, registries: Registries) -> None:
    rootfs = store.ensure(registries.public.ref("whiteout:1"))
    work = Path(tempfile.mkdtemp(prefix="osbox-overlay-test-", dir="/var/tmp"))
    merged = work / "merged"
    for directory in ("upper", "work", "merged"):
        (work / directory).mkdir()
    lowerdir = ":".join(str(layer) for layer in reversed(rootfs.layers))  # overlayfs: topmost first
    options = f"lowerdir={lowerdir},upperdir={work / 'upper'},workdir={work / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        script = "ls /data; echo --; ls /opaque; echo --; cat /data/keep; echo changed > /data/keep"
        result = subprocess.run(
            [shutil.which("chroot") or "/usr/sbin/chroot", str(merged), "/bin/busybox", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/bin"},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n--\n") == ["keep", "c", "kept\n"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
        shutil.rmtree(work)
    # The write went to the sandbox's upper dir, not into the shared layer.
    assert (rootfs.layers[0] / "data/keep").read_text() == "kept\n"
