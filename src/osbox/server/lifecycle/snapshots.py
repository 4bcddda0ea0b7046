"""Snapshots: copies of a sandbox's private files plus how it was started.

An image sandbox's private files are its writable layer (`fs/upper`: everything it changed in its
image, whiteouts included), and restoring starts the same image under a copy of that layer; a
sandbox without an image keeps `/workspace` and its home.

Creating one answers at once (`Creating`); a background task freezes the sandbox, copies
`state_dir/fs/{workspace,home}` to `data_dir/snapshots/<id>/`, thaws it, and marks the snapshot
`Ready` (or `Failed`). Restoring seeds a new sandbox's state directory with those copies. Both
copies walk with directory fds and never follow a symlink the sandbox planted (`treecopy`); sparse
files stay sparse, and all snapshots together take at most `snapshots_max_bytes` of disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .._confined import open_beneath
from .._store import Store
from ..config import ServerConfig
from .errors import bad_request, conflict, snapshot_not_found
from .manager import SandboxManager, SeedFn
from .records import SnapshotRecord, format_time, page_of, utcnow
from .treecopy import BudgetExceeded, TreeCopy
from .validation import CreateParams

__all__ = ["DEFAULT_RESTORE_ENTRYPOINT", "SnapshotManager", "copy_parts", "disk_usage"]

_log = logging.getLogger("osbox.server.snapshots")

DEFAULT_RESTORE_ENTRYPOINT = ["tail", "-f", "/dev/null"]
#: The parts of a sandbox's state directory a snapshot keeps, relative to `state_dir`.
_CAPTURED = ("fs/upper", "fs/workspace", "fs/home")


def copy_parts(source_dir: Path, target_dir: Path, copy: TreeCopy) -> None:
    """Copy each captured part of `source_dir` that exists into `target_dir` (which the parts must
    not exist in yet). `source_dir` is trusted as a path; the parts are opened beneath it
    without following symlinks, and copied without following any either."""
    root = os.open(source_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _CAPTURED:
            try:
                source = open_beneath(root, part, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                target = target_dir / part
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                target.mkdir(mode=0o700)
                target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    copy.copy(source, target_fd)
                finally:
                    os.close(target_fd)
            finally:
                os.close(source)
    finally:
        os.close(root)


def disk_usage(directory: Path) -> int:
    """Bytes the files under `directory` (a server-owned tree) take on disk, hard links once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(directory):  # never descends into symlinks
        for name in [*dirs, *files]:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _gib(count: int) -> str:
    return f"{count / 2**30:.3g} GiB"


class SnapshotManager:
    """Creates, lists, deletes and restores snapshots."""

    def __init__(self, config: ServerConfig, store: Store, sandboxes: SandboxManager) -> None:
        self.config = config
        self.store = store
        self.sandboxes = sandboxes
        self._tasks: set[asyncio.Task[None]] = set()
        #: One copy at a time, so that each sees what the others took of `snapshots_max_bytes`.
        self._copying = asyncio.Lock()

    def start(self) -> None:
        """Snapshots still `Creating` belong to a previous server that died mid-copy: fail them."""
        for doc in self.store.list_snapshots(["Creating"]):
            record = SnapshotRecord.from_doc(doc)
            self._set_state(record, "Failed", "server_restart", "The server stopped while copying.")
            shutil.rmtree(self._dir(record.id), ignore_errors=True)

    async def close(self) -> None:
        """Wait for copies in progress (they are short and leave a consistent snapshot)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dir(self, snapshot_id: str) -> Path:
        return self.config.snapshots_dir / snapshot_id

    def _record(self, snapshot_id: str) -> SnapshotRecord:
        doc = self.store.get_snapshot(snapshot_id)
        if doc is None:
            raise snapshot_not_found(snapshot_id)
        return SnapshotRecord.from_doc(doc)

    def _set_state(self, record: SnapshotRecord, state: str, reason: str, message: str) -> None:
        record.set_status(state, reason, message)
        self.store.put_snapshot(record.id, created_at=record.created_at, state=state, doc=record.to_doc())

    async def create(self, sandbox_id: str, body: Any) -> SnapshotRecord:
        """Accept a snapshot of a Running or Paused sandbox; the copy runs in the background."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise bad_request(
                "body must be a JSON object such as {'name': '...'}", "SNAPSHOT::INVALID_PARAMETER"
            )
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise bad_request("name must be a non-empty string", "SNAPSHOT::INVALID_PARAMETER")
        sandbox = await self.sandboxes.get(sandbox_id)
        if sandbox.state not in ("Running", "Paused"):
            raise conflict("SANDBOX::SANDBOX_NOT_RUNNING", f"Sandbox {sandbox_id!r} is {sandbox.state}")
        now = format_time(utcnow())
        record = SnapshotRecord(
            id=str(uuid.uuid4()),
            sandbox_id=sandbox_id,
            created_at=now,
            state="Creating",
            reason="snapshot_accepted",
            message="Copying the sandbox's files.",
            last_transition_at=now,
            name=name,
            image=sandbox.runs_image or sandbox.image,
            entrypoint=list(sandbox.entrypoint),
            env=dict(sandbox.env),
            cpu_cores=sandbox.cpu_cores,
            memory_bytes=sandbox.memory_bytes,
            pids_max=sandbox.pids_max,
        )
        self.store.put_snapshot(record.id, created_at=now, state=record.state, doc=record.to_doc())
        task = asyncio.get_running_loop().create_task(self._capture(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    async def _capture(self, record: SnapshotRecord) -> None:
        target = self._dir(record.id)
        try:
            async with self._copying:
                budget = self.config.snapshots_max_bytes - await asyncio.to_thread(
                    disk_usage, self.config.snapshots_dir
                )
                async with self.sandboxes.frozen(record.sandbox_id):
                    await asyncio.to_thread(
                        self._copy_out, self.config.sandboxes_dir / record.sandbox_id, target, budget
                    )
        except Exception as exc:
            _log.warning("snapshot %s of %s failed: %s", record.id, record.sandbox_id, exc)
            await asyncio.to_thread(shutil.rmtree, target, True)
            if self.store.get_snapshot(record.id) is None:
                return
            if isinstance(exc, BudgetExceeded):
                limit = _gib(self.config.snapshots_max_bytes)
                message = (
                    f"Snapshot storage is full: all snapshots together may take {limit} of disk "
                    "(the server's snapshots_max_bytes) and this one does not fit; delete snapshots "
                    "to make room."
                )
                self._set_state(record, "Failed", "snapshot_storage_full", message)
            else:
                self._set_state(record, "Failed", "snapshot_capture_failed", f"Copying failed: {exc}")
            return
        if self.store.get_snapshot(record.id) is not None:
            self._set_state(record, "Ready", "snapshot_ready", "Ready to restore.")

    @staticmethod
    def _copy_out(state_dir: Path, target: Path, budget: int) -> None:
        if budget <= 0:
            raise BudgetExceeded("no room left")
        target.mkdir(parents=True, mode=0o700)
        copy_parts(state_dir, target, TreeCopy(budget=budget))

    def get(self, snapshot_id: str) -> SnapshotRecord:
        """The snapshot record; 404 when unknown."""
        return self._record(snapshot_id)

    def list(self, *, sandbox_id: str | None, states: list[str], page: int, page_size: int) -> dict[str, Any]:
        """One page of snapshots, newest first, as the wire `ListSnapshotsResponse`."""
        wanted = {s.lower() for s in states}
        records = [
            r
            for r in (SnapshotRecord.from_doc(d) for d in self.store.list_snapshots())
            if (sandbox_id is None or r.sandbox_id == sandbox_id)
            and (not wanted or r.state.lower() in wanted)
        ]
        return page_of(records, page, page_size, error_code="SNAPSHOT::INVALID_PARAMETER")

    async def delete(self, snapshot_id: str) -> None:
        """Remove a snapshot and its files; 409 while it is still being created."""
        record = self._record(snapshot_id)
        if record.state == "Creating":
            raise conflict("SNAPSHOT::SNAPSHOT_CREATING", f"Snapshot {snapshot_id!r} is still being created")
        self.store.delete_snapshot(snapshot_id)
        await asyncio.to_thread(shutil.rmtree, self._dir(snapshot_id), True)

    def restore(self, params: CreateParams) -> tuple[CreateParams, SeedFn]:
        """Fill in a create request from a Ready snapshot; returns it and the state-dir seeder."""
        assert params.snapshot_id is not None
        doc = self.store.get_snapshot(params.snapshot_id)
        if doc is None:  # the spec gives create no 404: an unknown source is a bad parameter
            raise bad_request(f"Snapshot {params.snapshot_id!r} not found", "SNAPSHOT::SNAPSHOT_NOT_FOUND")
        record = SnapshotRecord.from_doc(doc)
        if record.state != "Ready":
            raise conflict(
                "SNAPSHOT::SNAPSHOT_NOT_READY", f"Snapshot {record.id!r} is {record.state}, not Ready"
            )
        params.restore_image = record.image  # the same image, under the snapshot's writable layer
        params.entrypoint = params.entrypoint or list(DEFAULT_RESTORE_ENTRYPOINT)
        params.env = {**record.env, **params.env}
        params.cpu_cores = params.cpu_cores if params.cpu_cores is not None else record.cpu_cores
        if params.memory_bytes is None:
            params.memory_bytes = record.memory_bytes
        source = self._dir(record.id)

        def seed(state_dir: Path) -> None:
            copy_parts(source, state_dir, TreeCopy())  # the new sandbox's disk, not snapshot storage

        return params, seed
