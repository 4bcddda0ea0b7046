"""The layer extractor: what it keeps (owners, modes, links, devices, whiteouts) and what it refuses.

Runs as root (ownership, device nodes, trusted.* xattrs), on real files in a temp dir: every test
also checks that nothing appeared next to the layer's directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from osbox.server.images import StoreFull, UnsafeLayer
from osbox.server.images.unpack import unpack_layer

from .registry import Entry, directory, file, gzip_bytes, hardlink, sha256, symlink, tar_bytes, zstd_bytes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp dir on a disk filesystem (xattrs), holding `layer/` and the blob; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="osbox-unpack-test-", dir="/var/tmp"))
    try:
        (root / "layer").mkdir()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def unpack(workdir: Path, entries: Sequence[Entry], compress: str = "gzip", max_bytes: int = 1 << 30) -> Path:
    raw = tar_bytes(entries)
    blob = workdir / "blob"
    blob.write_bytes(
        zstd_bytes(raw) if compress == "zstd" else gzip_bytes(raw) if compress == "gzip" else raw
    )
    unpack_layer(blob, workdir / "layer", sha256(raw), max_bytes=max_bytes)
    return workdir / "layer"


def assert_nothing_outside(workdir: Path) -> None:
    assert sorted(p.name for p in workdir.iterdir()) == ["blob", "layer"]
    assert not Path("/tmp/escaped").exists()


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_files_keep_owners_modes_links_and_devices(workdir: Path, compress: str) -> None:
    entries = [
        file("bin/su", "x", mode=0o4755),
        file("home/user/notes", "mine", mode=0o2640, uid=1000, gid=1001),
        hardlink("bin/su-again", "bin/su"),
        symlink("bin/abs", "/etc/passwd"),  # created, never followed
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        file("caps", "c", xattrs={"user.note": "kept"}),
        file("replaced", "old"),
        file("replaced", "new"),  # a later entry of the same name wins
    ]
    layer = unpack(workdir, entries, compress)
    su = (layer / "bin/su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_nlink == 2
    assert (layer / "bin/su-again").stat().st_ino == su.st_ino
    notes = (layer / "home/user/notes").stat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1000, 1001, 0o2640)
    assert os.readlink(layer / "bin/abs") == "/etc/passwd"
    null = os.stat(layer / "dev/null", follow_symlinks=False)
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.stat(layer / "run/fifo").st_mode)
    assert os.getxattr(layer / "caps", "user.note") == b"kept"
    assert (layer / "replaced").read_text() == "new"
    assert_nothing_outside(workdir)


def test_whiteouts_and_opaque_directories(workdir: Path) -> None:
    layer = unpack(workdir, [file("etc/.wh.motd"), directory("var/cache"), file("var/cache/.wh..wh..opq")])
    motd = os.stat(layer / "etc/motd", follow_symlinks=False)
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == 0
    assert os.getxattr(layer / "var/cache", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(layer / "var/cache")) == []


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([file("../escaped", "x")], "'..' component"),
        ([file("a/../../escaped", "x")], "'..' component"),
        ([file("/tmp/escaped", "x")], "absolute path"),
        ([symlink("out", "/tmp"), file("out/escaped", "x")], "symlink"),
        ([symlink("up", "../.."), file("up/escaped", "x")], "symlink"),
        ([symlink("out", "/tmp"), directory("out/escaped")], "symlink"),
        ([hardlink("passwd", "/etc/passwd")], "absolute path"),
        ([hardlink("passwd", "../../../../etc/passwd")], "'..' component"),
        ([symlink("etc", "/etc"), hardlink("passwd", "etc/passwd")], "symlink"),
        ([hardlink("passwd", "etc/passwd")], "not in this layer"),
        ([file("f", "x"), file("f/escaped", "x")], "not a directory"),
    ],
)
def test_escapes_are_refused(workdir: Path, entries: list[Entry], says: str) -> None:
    with pytest.raises(UnsafeLayer, match=says):
        unpack(workdir, entries)
    assert_nothing_outside(workdir)
    assert os.stat("/etc/passwd").st_nlink == 1  # no hard link to the host's file was made


def test_content_must_match_the_diff_id(workdir: Path) -> None:
    blob = workdir / "blob"
    blob.write_bytes(gzip_bytes(tar_bytes([file("a", "x")])))
    with pytest.raises(UnsafeLayer, match="not sha256:"):
        unpack_layer(blob, workdir / "layer", sha256(b"something else"), max_bytes=1 << 20)


def test_not_a_tar_is_refused(workdir: Path) -> None:
    blob = workdir / "blob"
    blob.write_bytes(gzip_bytes(b"no tar here" * 100))
    with pytest.raises(UnsafeLayer, match="not a readable tar"):
        unpack_layer(blob, workdir / "layer", sha256(b""), max_bytes=1 << 20)


def test_a_layer_expanding_beyond_the_limit_is_refused(workdir: Path) -> None:
    entries = [file("small", b"x" * 1000), file("zeros", bytes(100_000))]  # gzip: a few hundred bytes
    with pytest.raises(StoreFull, match="expands to more than 50000 bytes"):
        unpack(workdir, entries, max_bytes=50_000)
    assert not (workdir / "layer/zeros").exists()
