"""The confined primitives refuse every symlink, with openat2 and with the O_NOFOLLOW walk alike."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from osbox.server import _confined
from osbox.server._backend.base import Mount
from osbox.server._backend.bwrap.host import open_mount_source
from osbox.server._confined import make_dirs_beneath, open_beneath, open_under
from osbox.server.lifecycle.manager import SandboxManager
from osbox.server.lifecycle.validation import CreateParams


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with openat2 and with the fallback a kernel without it gets."""
    if request.param == "walk":
        monkeypatch.setattr(_confined, "_have_openat2", False)
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`root/` with a real dir, a file and symlinks of every kind; `outside/` they point at."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret").write_text("host")
    root = tmp_path / "root"
    (root / "real" / "inner").mkdir(parents=True)
    (root / "real" / "file").write_text("mine")
    (root / "abs").symlink_to(outside)
    (root / "rel").symlink_to("../outside")
    (root / "inside").symlink_to("real")  # even a symlink that stays inside is refused
    (root / "real" / "chain").symlink_to("../abs")
    (root / "magic").symlink_to("/proc/self/root")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield root, fd
    os.close(fd)


def _errno(call: object, *args: object, **kwargs: object) -> int:
    assert callable(call)
    with pytest.raises(OSError) as info:
        fd = call(*args, **kwargs)
        os.close(fd)
    return info.value.errno or 0


def test_plain_paths_open(mode: str, tree: tuple[Path, int]) -> None:
    _root, fd = tree
    file_fd = open_beneath(fd, "real/./file", os.O_RDONLY)
    try:
        assert os.read(file_fd, 10) == b"mine"
        assert os.get_inheritable(file_fd) is False
    finally:
        os.close(file_fd)
    dir_fd = open_beneath(fd, "", os.O_RDONLY | os.O_DIRECTORY)
    os.close(dir_fd)


@pytest.mark.parametrize(
    "path",
    ["abs", "abs/secret", "rel/secret", "inside/file", "real/chain/secret", "real/chain", "magic/etc"],
)
@pytest.mark.parametrize("flags", [os.O_PATH, os.O_RDONLY, os.O_PATH | os.O_DIRECTORY])
def test_every_symlink_is_refused(mode: str, tree: tuple[Path, int], path: str, flags: int) -> None:
    _root, fd = tree
    assert _errno(open_beneath, fd, path, flags) == errno.ELOOP


@pytest.mark.parametrize("path", ["..", "real/../../outside", "/etc", "real/../real"])
def test_dot_dot_and_absolute_paths_are_refused(mode: str, tree: tuple[Path, int], path: str) -> None:
    _root, fd = tree
    assert _errno(open_beneath, fd, path, os.O_PATH) == errno.EXDEV


def test_same_mount_refuses_crossing_a_mount(mode: str) -> None:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        assert _errno(open_beneath, root, "proc/self", os.O_PATH, same_mount=True) == errno.EXDEV
    finally:
        os.close(root)


def test_make_dirs_creates_with_the_mode_and_refuses_symlinks(mode: str, tree: tuple[Path, int]) -> None:
    root, fd = tree
    old_umask = os.umask(0o077)
    try:
        made = make_dirs_beneath(fd, "new/a/b", mode=0o777)
    finally:
        os.umask(old_umask)
    try:
        assert os.fstat(made).st_ino == (root / "new/a/b").stat().st_ino
    finally:
        os.close(made)
    for part in ("new", "new/a", "new/a/b"):
        assert stat.S_IMODE((root / part).stat().st_mode) == 0o777
    (root / "real").chmod(0o750)
    os.close(make_dirs_beneath(fd, "real/inner", mode=0o777))  # existing dirs are left alone
    assert stat.S_IMODE((root / "real").stat().st_mode) == 0o750
    before = {p: p.stat().st_mode for p in (root.parent / "outside").rglob("*")}
    for path in ("abs/x", "abs", "real/chain/y", "inside/z"):
        assert _errno(make_dirs_beneath, fd, path, mode=0o777) == errno.ELOOP
    assert {p: p.stat().st_mode for p in (root.parent / "outside").rglob("*")} == before
    assert not (root.parent / "outside" / "x").exists()


def test_open_under_trusts_the_root_but_not_below(mode: str, tree: tuple[Path, int]) -> None:
    root, _fd = tree
    (root.parent / "link-to-root").symlink_to(root)
    fd = open_under(root.parent / "link-to-root", "real/file", os.O_RDONLY)  # the root may be a link
    os.close(fd)
    file_root = open_under(root / "real" / "file", "", os.O_PATH)  # a file root, nothing below
    os.close(file_root)
    assert _errno(open_under, root, "abs/secret", os.O_RDONLY) == errno.ELOOP


def test_a_symlink_planted_after_the_check_is_not_followed(tmp_path: Path) -> None:
    """The race layer: the volume dir is made, and the mount source opened, confined again."""
    outside = tmp_path / "host-dir"
    outside.mkdir(mode=0o755)
    volumes = tmp_path / "volumes"
    (volumes / "claim").mkdir(parents=True)
    (volumes / "claim" / "evil").symlink_to(outside)
    mount = {"host_path": str(volumes / "claim" / "evil"), "beneath": str(volumes), "create": True}
    params = cast(CreateParams, SimpleNamespace(mounts=[mount]))
    with pytest.raises(OSError) as made:
        SandboxManager._prepare_dirs(tmp_path / "state", params, None)
    assert made.value.errno == errno.ELOOP
    with pytest.raises(OSError) as opened:
        open_mount_source(Mount(volumes / "claim" / "evil", "/mnt", beneath=volumes))
    assert opened.value.errno == errno.ELOOP
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    # Without a symlink in the way the claim dir is made, 0777, and is what gets mounted.
    mount["host_path"] = str(volumes / "fresh" / "sub")
    SandboxManager._prepare_dirs(tmp_path / "state2", params, None)
    assert stat.S_IMODE((volumes / "fresh" / "sub").stat().st_mode) == 0o777
    fd = open_mount_source(Mount(volumes / "fresh" / "sub", "/mnt", beneath=volumes))
    try:
        assert os.fstat(fd).st_ino == (volumes / "fresh" / "sub").stat().st_ino
    finally:
        os.close(fd)
