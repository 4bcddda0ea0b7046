"""The snapshot tree copy: symlinks as symlinks, holes as holes, hard links as links, a budget."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox.server.lifecycle.treecopy import MAX_DEPTH, BudgetExceeded, TreeCopy

GIB = 2**30


def _copy(source: Path, target: Path, budget: int | None = None) -> TreeCopy:
    target.mkdir()
    copy = TreeCopy(budget=budget)
    src = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    dst = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy.copy(src, dst)
    finally:
        os.close(src)
        os.close(dst)
    return copy


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "source"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "file.txt").write_text("hello")
    (root / "etc").symlink_to("/etc")
    (root / "sub" / "rel").symlink_to("../sub/deeper")
    (root / "dangling").symlink_to("/no/such/thing")
    yield root


def test_symlinks_are_copied_as_symlinks_never_followed(source: Path, tmp_path: Path) -> None:
    _copy(source, tmp_path / "copy")
    copy = tmp_path / "copy"
    for name, target in [("etc", "/etc"), ("sub/rel", "../sub/deeper"), ("dangling", "/no/such/thing")]:
        assert (copy / name).is_symlink() and os.readlink(copy / name) == target
    assert (copy / "sub" / "deeper" / "file.txt").read_text() == "hello"
    assert sorted(p.name for p in copy.iterdir()) == ["dangling", "etc", "sub"]


def test_sparse_files_stay_sparse(source: Path, tmp_path: Path) -> None:
    sparse = source / "sparse"
    with sparse.open("wb") as f:
        f.truncate(3 * GIB)
        f.seek(GIB)
        f.write(b"data in the middle")
    copy = _copy(source, tmp_path / "copy")
    copied = tmp_path / "copy" / "sparse"
    assert copied.stat().st_size == 3 * GIB
    assert copied.stat().st_blocks * 512 < 1 << 20  # ~one block, not 3 GiB
    with copied.open("rb") as f:
        f.seek(GIB)
        assert f.read(18) == b"data in the middle"
        f.seek(0)
        assert f.read(16) == bytes(16)
    assert copy.written < 1 << 20


def test_hard_links_fifos_modes_owners_and_times(source: Path, tmp_path: Path) -> None:
    (source / "a").write_text("linked")
    os.link(source / "a", source / "sub" / "b")
    os.mkfifo(source / "pipe", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(source / "sock"))
    (source / "sub").chmod(0o751)
    os.chown(source / "a", 12345, 23456)
    os.chmod(source / "a", 0o604)
    os.lchown(source / "etc", 34567, 34567)
    os.utime(source / "sub", ns=(1_000_000_000, 2_000_000_000))
    _copy(source, tmp_path / "copy")
    copy = tmp_path / "copy"
    assert (copy / "a").stat().st_ino == (copy / "sub" / "b").stat().st_ino
    assert stat.S_ISFIFO((copy / "pipe").lstat().st_mode)
    assert stat.S_IMODE((copy / "pipe").lstat().st_mode) == 0o640
    assert not (copy / "sock").exists()  # a socket means nothing in a copy
    assert stat.S_IMODE((copy / "sub").stat().st_mode) == 0o751
    a = (copy / "a").stat()
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (12345, 23456, 0o604)
    assert (copy / "etc").lstat().st_uid == 34567
    assert (copy / "sub").stat().st_mtime_ns == 2_000_000_000


def test_the_budget_stops_the_copy(source: Path, tmp_path: Path) -> None:
    (source / "big").write_bytes(os.urandom(300_000))
    with pytest.raises(BudgetExceeded):
        _copy(source, tmp_path / "copy", budget=100_000)
    assert _copy(source, tmp_path / "copy2", budget=400_000).written >= 300_000


def test_nesting_deeper_than_the_limit_fails_clearly(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    os.makedirs(deep / "/".join(["d"] * (MAX_DEPTH + 1)))
    with pytest.raises(OSError, match="nested deeper"):
        _copy(deep, tmp_path / "copy")
