"""The server key and the tokens derived from it; the data dir's ownership and mode checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbox.server.datadir import UnsafeDataDirError, check_data_dir
from osbox.server.tokens import SecretKeyError, TokenMinter, load_or_create_key, new_salt


def test_the_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary file left


@pytest.mark.parametrize(
    ("mode", "content", "message"),
    [(0o644, b"k" * 32, "readable by other users"), (0o600, b"short", "exactly 32 bytes")],
)
def test_an_untrustworthy_key_is_refused(tmp_path: Path, mode: int, content: bytes, message: str) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(SecretKeyError, match=message):
        load_or_create_key(path)


def test_a_symlinked_key_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"k" * 32)
    target.chmod(0o600)
    (tmp_path / "secret.key").symlink_to(target)
    with pytest.raises(OSError):
        load_or_create_key(tmp_path / "secret.key")


def test_tokens_depend_on_key_purpose_sandbox_and_salt() -> None:
    minter, other = TokenMinter(b"a" * 32), TokenMinter(b"b" * 32)
    salt = new_salt()
    token = minter.token("execd", "sbx", salt)
    assert token == minter.token("execd", "sbx", salt) and len(token) == 43
    variants = {
        other.token("execd", "sbx", salt),
        minter.token("egress", "sbx", salt),
        minter.token("execd", "sbx2", salt),
        minter.token("execd", "sbx", new_salt()),
    }
    assert token not in variants and len(variants) == 4
    assert "a" * 8 not in repr(minter)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving directories to other users needs root")
def test_data_dir_checks(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    check_data_dir(data_dir)  # not made yet: its parents decide
    data_dir.mkdir(mode=0o700)
    check_data_dir(data_dir)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others may add entries, not replace ours
    check_data_dir(sticky / "data")
    data_dir.chmod(0o770)
    check_data_dir(data_dir)  # group-writable, but the group is root's
    for mode, group in ((0o770, 12345), (0o703, 0)):
        data_dir.chmod(mode)
        os.chown(data_dir, 0, group)
        with pytest.raises(UnsafeDataDirError, match="writable by other users"):
            check_data_dir(data_dir)
    data_dir.chmod(0o700)
    os.chown(data_dir, 12345, 12345)
    with pytest.raises(UnsafeDataDirError, match="belongs to uid 12345"):
        check_data_dir(data_dir / "sub")
