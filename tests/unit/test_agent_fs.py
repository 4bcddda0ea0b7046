"""The in-sandbox file-system ops, called directly on a temp dir (no sandbox needed)."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

from osbox.server._agent import fs
from osbox.server._agent.fs import OPS


def call(op: str, **args: object) -> object:
    return OPS[op](**args)


def test_expand_variables_home_and_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("PROJ", "demo")
    assert fs.expand_path("$HOME/a") == "/home/u/a"
    assert fs.expand_path("${PROJ}/x") == "/workspace/demo/x"
    assert fs.expand_path("~") == "/home/u"
    assert fs.expand_path("~/f") == "/home/u/f"
    assert fs.expand_path("a/../b") == "/workspace/b"
    assert fs.expand_path("/../../etc") == "/etc"
    assert fs.expand_path("//x") == "/x"
    assert fs.expand_path("$EXTRA/y", {"EXTRA": "/opt"}) == "/opt/y"
    with pytest.raises(ValueError, match="NOPE"):
        fs.expand_path("$NOPE/x")
    with pytest.raises(ValueError):
        fs.expand_path("")


def test_stat_reports_fileinfo_shape(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    f.chmod(0o640)
    (tmp_path / "link").symlink_to(f)
    (tmp_path / "d").mkdir()
    infos = call("stat", paths=[str(f), str(tmp_path / "link"), str(tmp_path / "d")])
    assert isinstance(infos, dict)
    info = infos[str(f)]
    assert info["type"] == "file" and info["size"] == 5 and info["mode"] == 640
    assert info["path"] == str(f)
    assert info["modified_at"].endswith("Z") and "T" in info["created_at"]
    assert info["owner"] and info["group"]
    assert infos[str(tmp_path / "link")]["type"] == "symlink"
    assert infos[str(tmp_path / "d")]["type"] == "directory"
    with pytest.raises(FileNotFoundError):
        call("stat", paths=[str(f), str(tmp_path / "missing")])


def test_delete_files_ignores_missing_refuses_directories(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_text("x")
    call("delete_files", paths=[str(f), str(tmp_path / "missing")])
    assert not f.exists()
    (tmp_path / "d").mkdir()
    g = tmp_path / "g"
    g.write_text("keep")
    with pytest.raises(IsADirectoryError):
        call("delete_files", paths=[str(g), str(tmp_path / "d")])
    assert g.exists(), "nothing is deleted when one of the paths is refused"


def test_set_permissions_and_mode_validation(tmp_path: Path) -> None:
    f = tmp_path / "s.sh"
    f.write_text("#!/bin/sh\n")
    call("set_permissions", items={str(f): {"mode": 755}})
    assert stat.S_IMODE(f.stat().st_mode) == 0o755
    with pytest.raises(ValueError):
        call("set_permissions", items={str(f): {"mode": 789}})
    with pytest.raises(ValueError):
        call("set_permissions", items={str(f): {"mode": 644, "owner": "no-such-user-xyz"}})
    with pytest.raises(FileNotFoundError):
        call("set_permissions", items={str(tmp_path / "missing"): {"mode": 644}})


def test_move_creates_parents_and_refuses_existing(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_text("1")
    dest = tmp_path / "x" / "y" / "b"
    call("move", items=[{"src": str(src), "dest": str(dest)}])
    assert dest.read_text() == "1" and not src.exists()
    other = tmp_path / "c"
    other.write_text("2")
    with pytest.raises(FileExistsError):
        call("move", items=[{"src": str(other), "dest": str(dest)}])
    assert other.read_text() == "2" and dest.read_text() == "1"
    with pytest.raises(FileNotFoundError):
        call("move", items=[{"src": str(tmp_path / "missing"), "dest": str(tmp_path / "z")}])
    with pytest.raises(ValueError):
        call("move", items=[{"src": str(other)}])


def test_search_globs_on_basename_with_braces(tmp_path: Path) -> None:
    for rel in ["a.py", "b.txt", "sub/c.py", "sub/deeper/d.md", "sub/e.rs"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)

    def names(found: object) -> list[str]:
        assert isinstance(found, list)
        return sorted(os.path.relpath(i["path"], tmp_path) for i in found)

    assert names(call("search", path=str(tmp_path), pattern="*.py")) == ["a.py", "sub/c.py"]
    assert names(call("search", path=str(tmp_path), pattern="*.{md,rs}")) == ["sub/deeper/d.md", "sub/e.rs"]
    assert names(call("search", path=str(tmp_path), pattern="?.txt")) == ["b.txt"]
    assert names(call("search", path=str(tmp_path), pattern="[ab].*")) == ["a.py", "b.txt"]
    assert len(names(call("search", path=str(tmp_path)))) == 5
    with pytest.raises(FileNotFoundError):
        call("search", path=str(tmp_path / "missing"))
    with pytest.raises(NotADirectoryError):
        call("search", path=str(tmp_path / "a.py"))


def test_replace_counts_and_keeps_mode(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("host=localhost\nother=localhost\n")
    f.chmod(0o600)
    out = call("replace", items={str(f): {"old": "localhost", "new": "0.0.0.0"}})
    assert out == {str(f): {"replacedCount": 2}}
    assert f.read_text() == "host=0.0.0.0\nother=0.0.0.0\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert call("replace", items={str(f): {"old": "zzz", "new": "y"}}) == {str(f): {"replacedCount": 0}}
    with pytest.raises(ValueError):
        call("replace", items={str(f): {"old": "", "new": "y"}})
    with pytest.raises(FileNotFoundError):
        call("replace", items={str(tmp_path / "nope"): {"old": "a", "new": "b"}})


def test_list_dir_depth_order(tmp_path: Path) -> None:
    for rel in ["b/x", "b/y/z", "a"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    (tmp_path / "lnk").symlink_to(tmp_path / "b")

    def listing(depth: int) -> list[str]:
        found = call("list_dir", path=str(tmp_path), depth=depth)
        assert isinstance(found, list)
        return [os.path.relpath(i["path"], tmp_path) for i in found]

    assert listing(0) == []
    assert listing(1) == ["a", "b", "lnk"]
    assert listing(2) == ["a", "b", "b/x", "b/y", "lnk"]
    assert listing(5) == ["a", "b", "b/x", "b/y", "b/y/z", "lnk"]
    with pytest.raises(ValueError):
        call("list_dir", path=str(tmp_path / "lnk"))
    with pytest.raises(NotADirectoryError):
        call("list_dir", path=str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError):
        call("list_dir", path=str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        call("list_dir", path=str(tmp_path), depth=-1)


def test_make_and_delete_dirs(tmp_path: Path) -> None:
    leaf = tmp_path / "p" / "q"
    call("make_dirs", items={str(leaf): {"mode": 700}})
    assert leaf.is_dir() and stat.S_IMODE(leaf.stat().st_mode) == 0o700
    call("make_dirs", items={str(leaf): {"mode": 0}})  # exists: fine
    (leaf / "f").write_text("x")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        call("delete_dirs", paths=[str(tmp_path / "p"), str(f)])
    assert leaf.exists()
    call("delete_dirs", paths=[str(tmp_path / "p"), str(tmp_path / "missing")])
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError):
        call("delete_dirs", paths=["/"])


def test_upload_prepare_and_finish(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "f.bin"
    plan = call("prepare_upload", path=str(target))
    assert isinstance(plan, dict) and plan["path"] == str(target)
    assert target.parent.is_dir()
    Path(plan["temp"]).write_bytes(b"data")
    info = call("finish_upload", temp=plan["temp"], path=plan["path"], mode=600)
    assert isinstance(info, dict) and info["size"] == 4 and info["mode"] == 600
    assert target.read_bytes() == b"data" and not Path(plan["temp"]).exists()
    with pytest.raises(IsADirectoryError):
        call("prepare_upload", path=str(tmp_path))


def test_resolve_dir(tmp_path: Path) -> None:
    assert call("resolve_dir", path=str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError) as missing:
        call("resolve_dir", path=str(tmp_path / "nope"))
    assert missing.value.errno == errno.ENOENT
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        call("resolve_dir", path=str(tmp_path / "f"))


def test_the_execd_server_calls_exactly_these_ops() -> None:
    """An op name the server misspells would only show as a 500 at run time; an op it never calls is dead."""
    # The bwrap backend's typed file and session operations are the agent's only callers.
    source = (Path(fs.__file__).parent.parent / "_backend" / "bwrap" / "agent_files.py").read_text()
    called = set(re.findall(r'self\._call\(\s*"(\w+)"', source))
    assert called == set(OPS)
    assert all(callable(op) for op in OPS.values())
