"""Durable records of the local runtime: one SQLite file (WAL, 0600) under the data directory.

Sandbox and snapshot records are JSON documents keyed by id, with the state in its own column so
that start-up can find live sandboxes. Events are append-only rows (state transitions with their
reasons) read back by the diagnostics API. The store knows nothing about HTTP or backends.

    store = Store(data_dir / "osbox.db")
    store.put_sandbox("sbx-1", created_at="2026-01-01T00:00:00Z", state="Running", doc={...})
    store.add_event("sbx-1", at="...", state="Running", reason="created", message="...")
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Event", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_sandbox ON events (sandbox_id, seq);
"""

_TABLES = ("sandboxes", "snapshots")


@dataclass(frozen=True)
class Event:
    """One recorded state transition of a sandbox."""

    sandbox_id: str
    at: str
    state: str
    reason: str
    message: str


class Store:
    """Thread-safe access to the runtime's SQLite database; every write commits immediately."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(path)
        # One connection shared under a lock: writes are tiny and the server runs one event loop.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._locked() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Deleted and overwritten rows are zeroed, not left in free space for a later reader.
            db.execute("PRAGMA secure_delete=ON")
            db.executescript(_SCHEMA)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def scrub(self) -> None:
        """Rewrite the database and empty its WAL, so that no old version of any row is left on disk
        (after removing something that must not stay readable)."""
        with self._locked() as db:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the database; the store must not be used afterwards."""
        with self._locked() as db:
            db.close()

    # Documents (sandboxes and snapshots share one shape).

    def _put(self, table: str, doc_id: str, created_at: str, state: str, doc: dict[str, Any]) -> None:
        assert table in _TABLES
        with self._locked() as db:
            db.execute(
                f"INSERT INTO {table} (id, created_at, state, doc) VALUES (?, ?, ?, ?) "  # noqa: S608
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
                (doc_id, created_at, state, json.dumps(doc)),
            )

    def _get(self, table: str, doc_id: str) -> dict[str, Any] | None:
        assert table in _TABLES
        with self._locked() as db:
            row = db.execute(f"SELECT doc FROM {table} WHERE id = ?", (doc_id,)).fetchone()  # noqa: S608
        return None if row is None else _load(row[0])

    def _list(self, table: str, states: list[str] | None) -> list[dict[str, Any]]:
        assert table in _TABLES
        query = f"SELECT doc FROM {table}"  # noqa: S608
        args: list[str] = []
        if states:
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args = list(states)
        query += " ORDER BY created_at DESC, seq DESC"
        with self._locked() as db:
            rows = db.execute(query, args).fetchall()
        return [_load(row[0]) for row in rows]

    def _delete(self, table: str, doc_id: str) -> bool:
        assert table in _TABLES
        with self._locked() as db:
            cursor = db.execute(f"DELETE FROM {table} WHERE id = ?", (doc_id,))  # noqa: S608
        return cursor.rowcount > 0

    def put_sandbox(self, sandbox_id: str, *, created_at: str, state: str, doc: dict[str, Any]) -> None:
        """Insert or replace a sandbox record (its `created_at` is fixed by the first insert)."""
        self._put("sandboxes", sandbox_id, created_at, state, doc)

    def get_sandbox(self, sandbox_id: str) -> dict[str, Any] | None:
        """The sandbox record, or None."""
        return self._get("sandboxes", sandbox_id)

    def list_sandboxes(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        """Sandbox records, newest first, optionally only those in one of `states`."""
        return self._list("sandboxes", states)

    def delete_sandbox(self, sandbox_id: str) -> bool:
        """Remove a sandbox record and its events; False when there was none."""
        with self._locked() as db:
            db.execute("DELETE FROM events WHERE sandbox_id = ?", (sandbox_id,))
        return self._delete("sandboxes", sandbox_id)

    def put_snapshot(self, snapshot_id: str, *, created_at: str, state: str, doc: dict[str, Any]) -> None:
        """Insert or replace a snapshot record."""
        self._put("snapshots", snapshot_id, created_at, state, doc)

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        """The snapshot record, or None."""
        return self._get("snapshots", snapshot_id)

    def list_snapshots(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        """Snapshot records, newest first, optionally only those in one of `states`."""
        return self._list("snapshots", states)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Remove a snapshot record; False when there was none."""
        return self._delete("snapshots", snapshot_id)

    # Events.

    def add_event(self, sandbox_id: str, *, at: str, state: str, reason: str, message: str) -> None:
        """Append one state transition of a sandbox."""
        with self._locked() as db:
            db.execute(
                "INSERT INTO events (sandbox_id, at, state, reason, message) VALUES (?, ?, ?, ?, ?)",
                (sandbox_id, at, state, reason, message),
            )

    def events(self, sandbox_id: str) -> list[Event]:
        """Every recorded transition of a sandbox, oldest first."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT sandbox_id, at, state, reason, message FROM events WHERE sandbox_id = ? ORDER BY seq",
                (sandbox_id,),
            ).fetchall()
        return [Event(*row) for row in rows]


def _make_private(path: Path) -> None:
    """Make the database file 0600 before SQLite opens it (its -wal and -shm files take the database's
    mode), and tighten the files an older version left readable."""
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if name == path else 0)
        try:
            fd = os.open(name, flags, 0o600)
        except FileNotFoundError:
            continue
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _load(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc
