"""The SQLite store: documents, ordering, state filters, events, durability across reopen."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from osbox.server._store import Store


def test_put_get_update_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "osbox.db")
    try:
        store.put_sandbox(
            "a", created_at="2026-01-01T00:00:00.000Z", state="Pending", doc={"id": "a", "n": 1}
        )
        assert store.get_sandbox("a") == {"id": "a", "n": 1}
        store.put_sandbox("a", created_at="ignored", state="Running", doc={"id": "a", "n": 2})
        assert store.get_sandbox("a") == {"id": "a", "n": 2}
        assert store.list_sandboxes(["Running"]) == [{"id": "a", "n": 2}]
        assert store.list_sandboxes(["Pending"]) == []
        assert store.delete_sandbox("a") is True
        assert store.delete_sandbox("a") is False
        assert store.get_sandbox("a") is None
    finally:
        store.close()


def test_newest_first_and_state_filter(tmp_path: Path) -> None:
    store = Store(tmp_path / "osbox.db")
    try:
        for i, state in enumerate(["Running", "Paused", "Failed"]):
            store.put_sandbox(
                f"s{i}", created_at=f"2026-01-0{i + 1}T00:00:00.000Z", state=state, doc={"i": i}
            )
        # Same timestamp: insertion order breaks the tie, newest first.
        store.put_sandbox("s3", created_at="2026-01-03T00:00:00.000Z", state="Running", doc={"i": 3})
        assert [d["i"] for d in store.list_sandboxes()] == [3, 2, 1, 0]
        assert [d["i"] for d in store.list_sandboxes(["Running", "Paused"])] == [3, 1, 0]
    finally:
        store.close()


def test_snapshots_are_separate_from_sandboxes(tmp_path: Path) -> None:
    store = Store(tmp_path / "osbox.db")
    try:
        store.put_snapshot("x", created_at="2026-01-01T00:00:00.000Z", state="Creating", doc={"id": "x"})
        assert store.get_sandbox("x") is None
        assert store.list_snapshots(["Creating"]) == [{"id": "x"}]
        assert store.delete_snapshot("x") is True
        assert store.list_snapshots() == []
    finally:
        store.close()


def test_events_in_order_and_removed_with_the_sandbox(tmp_path: Path) -> None:
    store = Store(tmp_path / "osbox.db")
    try:
        store.put_sandbox("a", created_at="t", state="Running", doc={})
        store.add_event("a", at="t1", state="Pending", reason="creating", message="m1")
        store.add_event("a", at="t2", state="Running", reason="created", message="m2")
        store.add_event("b", at="t3", state="Running", reason="created", message="other")
        assert [(e.state, e.reason) for e in store.events("a")] == [
            ("Pending", "creating"),
            ("Running", "created"),
        ]
        store.delete_sandbox("a")
        assert store.events("a") == []
        assert len(store.events("b")) == 1
    finally:
        store.close()


def test_records_survive_reopen_and_use_wal(tmp_path: Path) -> None:
    path = tmp_path / "osbox.db"
    store = Store(path)
    store.put_sandbox("a", created_at="t", state="Running", doc={"k": "v"})
    store.add_event("a", at="t", state="Running", reason="created", message="")
    store.close()
    reopened = Store(path)
    try:
        assert reopened.get_sandbox("a") == {"k": "v"}
        assert len(reopened.events("a")) == 1
    finally:
        reopened.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_database_is_private_and_scrub_leaves_no_old_row_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "osbox.db"
    path.touch(mode=0o644)  # as an older version left it
    store = Store(path)
    store.put_sandbox(
        "s", created_at="2026-01-01T00:00:00Z", state="Running", doc={"id": "s", "t": "SECRET-1"}
    )
    store.put_sandbox("s", created_at="2026-01-01T00:00:00Z", state="Running", doc={"id": "s"})
    files = [path, tmp_path / "osbox.db-wal", tmp_path / "osbox.db-shm"]
    assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3
    store.scrub()
    assert all(b"SECRET-1" not in f.read_bytes() for f in files if f.exists())
    store.close()
