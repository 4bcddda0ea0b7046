"""The sandbox manager: records, states and transitions, expiry, and re-adoption after a restart.

Every state change goes through `_transition`, which persists the record and appends an event,
so the store always holds what GET answers and the diagnostics API can replay the history.
Operations on one sandbox are serialised by a per-sandbox lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .._backend.base import Backend, BackendError, Mount, SandboxHandle, SandboxSpec
from .._confined import make_dirs_beneath
from .._store import Store
from ..config import ServerConfig
from ..egress.networks import NETWORK_EXTENSION, NetworkChoice, network_choice
from ..egress.policy import PolicyError
from ..images.errors import ImageError
from ..images.skopeo import Credentials
from ..images.store import RootFS
from ..tokens import TokenMinter, new_salt
from .errors import ApiError, bad_request, conflict, not_found
from .images import LaunchSettings, SandboxImages, launch_settings
from .reaper import Reaper
from .records import (
    LIVE_STATES,
    SandboxRecord,
    format_quantity,
    format_time,
    page_of,
    parse_time,
    utcnow,
)
from .validation import MAX_SANDBOX_TIMEOUT_SECONDS, CreateParams, parse_metadata_patch

__all__ = ["SandboxManager"]

#: What a sandbox record keeps of each checked volume (`beneath`: see `Mount`).
_MOUNT_KEYS = ("host_path", "sandbox_path", "read_only", "beneath")

_log = logging.getLogger("osbox.server.lifecycle")

#: Called with a sandbox id when it is deleted or expires (execd state, forwarders, ...).
ForgetHook = Callable[[str], Awaitable[None]]
#: Fills a fresh state directory before the backend starts the sandbox (snapshot restore).
SeedFn = Callable[[Path], None]

_STATE_NAMES = {s.lower(): s for s in (*LIVE_STATES, "Terminated", "Failed", "Unknown")}


def canonical_state(name: str) -> str:
    """`running` → `Running`; unknown names are returned unchanged (they simply match nothing)."""
    return _STATE_NAMES.get(name.lower(), name)


class SandboxManager:
    """Owns every sandbox of this server: its record, its backend handle and its deadline."""

    def __init__(self, config: ServerConfig, store: Store, backend: Backend, tokens: TokenMinter) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        #: The image store, for a backend that runs images (None: sandboxes get no image root).
        self.images = SandboxImages(config, self.images_in_use) if backend.runs_images else None
        self._creating: set[asyncio.Task[None]] = set()  # creates waiting for their image's pull
        self._tokens = tokens
        self._handles: dict[str, SandboxHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._deadlines: dict[str, datetime] = {}
        self._forget_hooks: list[ForgetHook] = []
        self._reaper = Reaper(self._next_deadline, self._expire_due)

    # Start-up and shutdown.

    def add_forget_hook(self, hook: ForgetHook) -> None:
        """Register a callback run after a sandbox is deleted or expires."""
        self._forget_hooks.append(hook)

    async def start(self) -> None:
        """Re-adopt the sandboxes a previous server left running, then start the reaper."""
        self._replace_stored_tokens()
        for doc in self.store.list_sandboxes(list(LIVE_STATES)):
            await self._readopt(SandboxRecord.from_doc(doc))
        for doc in self.store.list_sandboxes():
            record = SandboxRecord.from_doc(doc)
            if record.expires_at is not None:
                self._deadlines[record.id] = parse_time(record.expires_at)
        self._reaper.start()

    def _replace_stored_tokens(self) -> None:
        """Records of older versions held their tokens in plaintext, in a file other users could read:
        treat those tokens as known, give each sandbox new ones, and scrub the old ones from the disk."""
        docs = self.store.list_sandboxes()
        stored = [SandboxRecord.from_doc(doc) for doc in docs if not doc.get("token_salt")]
        for record in stored:
            record.token_salt = new_salt()
            self._save(record)  # the document no longer has the plaintext fields
        if stored:
            self.store.scrub()
            _log.warning(
                "replaced the access tokens of %d sandboxes that an older version had stored in plaintext; "
                "their clients must fetch the endpoints again",
                len(stored),
            )

    async def _readopt(self, record: SandboxRecord) -> None:
        try:
            handle = await self.backend.adopt(self._spec(record))
        except Exception as exc:  # a broken leftover must not stop the server from starting
            _log.warning("re-adopting sandbox %s failed: %s", record.id, exc)
            handle = None
        if record.state == "Pending":
            # The server ended in the middle of this create: whatever it had started is half made
            # (no entrypoint, perhaps no limits), so it goes, and the record says why.
            if handle is not None:
                with contextlib.suppress(Exception):
                    await self.backend.destroy(handle)
            self._transition(
                record, "Failed", "server_restart", "The server stopped while it was creating the sandbox."
            )
            return
        if handle is None:
            self._transition(
                record,
                "Failed",
                "server_restart",
                "The sandbox's processes were gone when the server restarted; its files were kept.",
            )
            return
        self._handles[record.id] = handle
        if self.images is not None and record.runs_image is not None:
            self.images.hold(record.id, record.runs_image["uri"])
        record.log_path = str(handle.log_path)
        if record.state != "Paused":
            self._transition(record, "Running", "server_restart", "Re-adopted after a server restart.")
        _log.info("re-adopted sandbox %s (%s)", record.id, record.state)

    async def close(self) -> None:
        """Stop the reaper and pending creates; destroy every sandbox if the config says so, else
        leave them running."""
        await self._reaper.stop()
        for task in list(self._creating):
            task.cancel()
        await asyncio.gather(*self._creating, return_exceptions=True)
        if self.config.destroy_on_shutdown:
            for sandbox_id in [doc["id"] for doc in self.store.list_sandboxes()]:
                try:
                    await self.delete(sandbox_id, reason="server_shutdown")
                except Exception:
                    _log.exception("destroying sandbox %s at shutdown failed", sandbox_id)
        self._handles.clear()

    # Queries.

    def _record(self, sandbox_id: str) -> SandboxRecord:
        doc = self.store.get_sandbox(sandbox_id)
        if doc is None:
            raise not_found(sandbox_id)
        return SandboxRecord.from_doc(doc)

    async def get(self, sandbox_id: str) -> SandboxRecord:
        """The current record; notices a tree that died on its own. Raises 404."""
        return await self._refresh(self._record(sandbox_id))

    async def _refresh(self, record: SandboxRecord) -> SandboxRecord:
        handle = self._handles.get(record.id)
        if handle is None or record.state not in ("Running", "Paused"):
            return record
        if self.backend.is_alive(handle):
            return record
        async with self._lock(record.id):
            record = self._record(record.id)
            if self._handles.pop(record.id, None) is handle:
                oom_kills = handle.oom_kills()  # before destroy removes the cgroup that counts them
                with contextlib.suppress(Exception):
                    await self.backend.destroy(handle)
                if oom_kills:
                    memory = format_quantity(record.memory_bytes) if record.memory_bytes else "its limit"
                    self._transition(
                        record,
                        "Failed",
                        "oom_killed",
                        f"The sandbox's processes are gone after it ran out of memory ({memory}): "
                        f"the kernel's OOM killer killed {oom_kills} of its processes.",
                    )
                else:
                    # Not the entrypoint: the agent (PID 1) outlives it; its end ends the sandbox.
                    message = "The sandbox's init process (PID 1) ended, and all its processes with it."
                    self._transition(record, "Failed", "process_exited", message)
        return record

    async def list(
        self, *, states: list[str], metadata: dict[str, str], page: int, page_size: int
    ) -> dict[str, Any]:
        """One page of sandboxes, newest first, as the wire `ListSandboxesResponse`."""
        records = [SandboxRecord.from_doc(doc) for doc in self.store.list_sandboxes()]
        records = [await self._refresh(r) for r in records]
        wanted = {canonical_state(s) for s in states}
        matching = [
            r
            for r in records
            if (not wanted or r.state in wanted) and all(r.metadata.get(k) == v for k, v in metadata.items())
        ]
        return page_of(matching, page, page_size, error_code="SANDBOX::INVALID_PARAMETER")

    def handle(self, sandbox_id: str) -> SandboxHandle:
        """The live handle of a Running sandbox; 404 when unknown, 409 when not running."""
        record = self._record(sandbox_id)
        handle = self._handles.get(sandbox_id)
        if handle is None or record.state != "Running":
            raise conflict("SANDBOX::SANDBOX_NOT_RUNNING", f"Sandbox {sandbox_id!r} is {record.state}")
        return handle

    def live_ids(self) -> tuple[str, ...]:
        """The ids of the sandboxes this server holds a live handle of."""
        return tuple(self._handles)

    def tokens(self, sandbox_id: str) -> tuple[str, str]:
        """(execd access token, egress auth token) of a sandbox; 404 when unknown."""
        record = self._record(sandbox_id)
        return (
            self._tokens.token("execd", sandbox_id, record.token_salt),
            self._tokens.token("egress", sandbox_id, record.token_salt),
        )

    def vault_key(self, sandbox_id: str) -> bytes:
        """The 32-byte key of the sandbox's Credential Vault (derived like its tokens); 404 when unknown."""
        record = self._record(sandbox_id)
        return hashlib.sha256(self._tokens.token("vault", sandbox_id, record.token_salt).encode()).digest()

    # Create and delete.

    async def create(self, params: CreateParams, *, seed: SeedFn | None = None) -> SandboxRecord:
        """Start a sandbox and return its record: Running, or Failed with the reason."""
        disk_bytes = self._disk_bytes(params)
        now = utcnow()
        sandbox_id = str(uuid.uuid4())
        record = SandboxRecord(
            id=sandbox_id,
            created_at=format_time(now),
            entrypoint=params.entrypoint or [],  # none: the image's (see `launch_settings`)
            state="Pending",
            reason="creating",
            message="Starting the sandbox.",
            last_transition_at=format_time(now),
            image=params.image,
            runs_image=params.image or params.restore_image,
            snapshot_id=params.snapshot_id,
            platform=params.platform,
            env=params.env,
            metadata=params.metadata,
            expires_at=None
            if params.timeout_seconds is None
            else format_time(now + timedelta(seconds=params.timeout_seconds)),
            cpu_cores=params.cpu_cores if params.cpu_cores is not None else self.config.default_cpu_cores,
            memory_bytes=params.memory_bytes
            if params.memory_bytes is not None
            else self.config.default_memory_bytes,
            pids_max=self.config.default_pids_limit,
            disk_bytes=disk_bytes,
            mounts=[{k: m[k] for k in _MOUNT_KEYS} for m in params.mounts],
            extensions=params.extensions,
            extras=params.extras,
            token_salt=new_salt(),
        )
        self._transition(record, "Pending", "creating", "Starting the sandbox.")
        if record.expires_at is not None:
            self._deadlines[sandbox_id] = parse_time(record.expires_at)
            self._reaper.poke()
        rootfs = None
        if self.images is not None and record.runs_image is not None:
            rootfs = await self.images.lookup(record.runs_image["uri"])
            if rootfs is None:  # answer Pending now; the pull and the start go on in the background
                uri = record.runs_image["uri"]
                self._transition(record, "Pending", "pulling_image", f"Pulling the image {uri}.")
                task = asyncio.get_running_loop().create_task(
                    self._start(record, params, seed, pull=params.image_auth or True)
                )
                self._creating.add(task)
                task.add_done_callback(self._creating.discard)
                return record
        await self._start(record, params, seed, rootfs=rootfs)
        return record

    async def _start(
        self,
        record: SandboxRecord,
        params: CreateParams,
        seed: SeedFn | None,
        *,
        rootfs: RootFS | None = None,
        pull: Credentials | bool = False,
    ) -> None:
        """Pull the image (with `pull`: True, or the registry credentials), start the sandbox, and
        record it Running, or Failed with the reason."""
        sandbox_id = record.id
        async with self._lock(sandbox_id):
            # Whatever fails from here on, the record ends Failed (never stuck Pending) and the
            # backend has removed what it started (its `create` cleans up after itself).
            try:
                if pull and self.images is not None and record.runs_image is not None:
                    credentials = pull if isinstance(pull, Credentials) else None
                    rootfs = await self.images.pull(record.runs_image["uri"], credentials)
                    self._transition(record, "Pending", "creating", "Starting the sandbox.")
                settings = None
                if rootfs is not None:
                    settings = launch_settings(rootfs, record.env, record.entrypoint)
                    record.entrypoint = settings.entrypoint
                state_dir = self._state_dir(sandbox_id)
                await asyncio.to_thread(self._prepare_dirs, state_dir, params, seed)
                handle = await self.backend.create(self._spec(record, settings))
            except BaseException as exc:
                self._fail_create(record, exc)
                if not isinstance(exc, Exception):
                    raise  # cancelled: the record says so, the cancellation goes on
                return
            try:
                self._handles[sandbox_id] = handle
                if self.images is not None and record.runs_image is not None:
                    self.images.hold(sandbox_id, record.runs_image["uri"])
                record.log_path = str(handle.log_path)
                self._transition(record, "Running", "created", self._running_message(record, handle, rootfs))
            except BaseException as exc:  # a bug or a failing store: the sandbox must not run unowned
                self._handles.pop(sandbox_id, None)
                if self.images is not None:
                    self.images.release(sandbox_id)
                with contextlib.suppress(Exception):
                    await self.backend.destroy(handle)
                self._fail_create(record, exc)
                if not isinstance(exc, Exception):
                    raise
                return
        _log.info("created sandbox %s", sandbox_id)

    def images_in_use(self) -> set[str]:
        """Canonical names of the images live sandboxes run (never evicted from the store)."""
        names = set()
        for doc in self.store.list_sandboxes(list(LIVE_STATES)):
            image = doc.get("runs_image") or doc.get("image")
            if isinstance(image, dict) and isinstance(image.get("uri"), str):
                with contextlib.suppress(ImageError):
                    names.add(SandboxImages.name(image["uri"]))
        return names

    def _fail_create(self, record: SandboxRecord, exc: BaseException) -> None:
        """Mark a sandbox whose create failed `Failed`, with a reason a person can act on."""
        if isinstance(exc, BackendError):
            reason, message = "backend_error", f"The sandbox could not start: {exc}"
        elif isinstance(exc, ImageError):
            reason, message = "image_pull_failed", f"The image could not be pulled: {exc}"
        elif isinstance(exc, ValueError):  # the image's config does not start (no command, say)
            reason, message = "invalid_image", f"The sandbox could not start: {exc}"
        elif isinstance(exc, OSError):
            reason, message = "runtime_error", f"Preparing the sandbox failed: {exc}"
        elif isinstance(exc, Exception):
            # Unexpected: the details (and the traceback) go to the server log, not to the caller.
            _log.error("creating sandbox %s failed", record.id, exc_info=exc)
            reason = "runtime_error"
            message = (
                f"The sandbox could not start: internal error ({type(exc).__name__}; see the server log)."
            )
        else:
            reason, message = "cancelled", "The create was cancelled (server shutdown or client gone)."
        try:
            self._transition(record, "Failed", reason, message)
        except Exception:  # the store itself fails: at least no record may stay Pending
            _log.exception("recording the failed create of sandbox %s failed", record.id)
            with contextlib.suppress(Exception):
                self.store.delete_sandbox(record.id)

    def _disk_bytes(self, params: CreateParams) -> int:
        """The request's disk quota, or the server's default; 400 above the server's maximum."""
        if params.disk_bytes is None:
            return self.config.default_disk_bytes
        if params.disk_bytes > self.config.max_disk_bytes:
            most = format_quantity(self.config.max_disk_bytes)
            raise bad_request(f"resourceLimits.ephemeral-storage must be at most {most} on this server")
        return params.disk_bytes

    def _running_message(self, record: SandboxRecord, handle: SandboxHandle, rootfs: RootFS | None) -> str:
        parts = [f"Running under {self.backend.description}."]
        if rootfs is not None:
            parts.append(f"Image {rootfs.name} ({rootfs.digest}).")
        limits = ", ".join(f"{key} {value}" for key, value in record.resource_limits().items())
        if limits:
            parts.append(f"Limits: {limits}.")
        if not handle.limits_enforced:
            parts.append(f"Resource limits are not enforced: {handle.limits_message}")
        if handle.disk_message:
            parts.append(handle.disk_message)
        if handle.network_message:
            parts.append(handle.network_message)
        return " ".join(parts)

    @staticmethod
    def _prepare_dirs(state_dir: Path, params: CreateParams, seed: SeedFn | None) -> None:
        state_dir.mkdir(parents=True, exist_ok=False)
        for mount in params.mounts:
            if mount["create"]:
                # A named volume is sandbox-writable: its dirs are made (and chmod'ed through their
                # own fds) beneath the volumes dir without following any symlink a sandbox planted.
                volumes = Path(mount["beneath"])
                volumes.mkdir(parents=True, exist_ok=True)
                root = os.open(volumes, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    relative = str(Path(mount["host_path"]).relative_to(volumes))
                    # 0777: a shared named volume, every sandbox user may write to it.
                    os.close(make_dirs_beneath(root, relative, mode=0o777))
                finally:
                    os.close(root)
        if seed is not None:
            seed(state_dir)

    async def delete(self, sandbox_id: str, *, reason: str = "user_delete") -> None:
        """Kill the sandbox's tree and forget it (later GETs answer 404)."""
        async with self._lock(sandbox_id):
            self._record(sandbox_id)
            handle = self._handles.pop(sandbox_id, None)
            self._deadlines.pop(sandbox_id, None)
            if self.images is not None:
                self.images.release(sandbox_id)
            try:
                if handle is not None:
                    await self.backend.destroy(handle)
            finally:
                self.store.delete_sandbox(sandbox_id)
                await self.backend.remove_state(self._state_dir(sandbox_id))
        self._locks.pop(sandbox_id, None)
        for hook in self._forget_hooks:
            try:
                await hook(sandbox_id)
            except Exception:
                _log.exception("forgetting sandbox %s failed", sandbox_id)
        _log.info("deleted sandbox %s (%s)", sandbox_id, reason)

    # Pause, resume, and freezing for snapshots.

    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process; 409 unless Running."""
        async with self._lock(sandbox_id):
            record = await self._live_record(sandbox_id, "Running", "SANDBOX::SANDBOX_NOT_RUNNING")
            await self._backend_call(self.backend.pause, sandbox_id)
            self._transition(record, "Paused", "user_pause", "Paused; the expiry clock keeps running.")

    async def resume(self, sandbox_id: str) -> None:
        """Thaw every process; 409 unless Paused."""
        async with self._lock(sandbox_id):
            record = await self._live_record(sandbox_id, "Paused", "SANDBOX::SANDBOX_NOT_PAUSED")
            await self._backend_call(self.backend.resume, sandbox_id)
            self._transition(record, "Running", "user_resume", "Resumed.")

    @contextlib.asynccontextmanager
    async def frozen(self, sandbox_id: str) -> AsyncIterator[SandboxRecord]:
        """Hold the sandbox still (frozen if Running) while the caller copies its files."""
        async with self._lock(sandbox_id):
            record = self._record(sandbox_id)
            handle = self._handles.get(sandbox_id)
            freeze = handle is not None and record.state == "Running"
            if freeze:
                await self._backend_call(self.backend.pause, sandbox_id)
            try:
                yield record
            finally:
                if freeze:
                    await self._backend_call(self.backend.resume, sandbox_id)

    async def _live_record(self, sandbox_id: str, state: str, code: str) -> SandboxRecord:
        record = await self._refresh(self._record(sandbox_id))
        if record.state != state or sandbox_id not in self._handles:
            raise conflict(code, f"Sandbox {sandbox_id!r} is {record.state}, not {state}")
        return record

    async def _backend_call(
        self, operation: Callable[[SandboxHandle], Awaitable[None]], sandbox_id: str
    ) -> None:
        try:
            await operation(self._handles[sandbox_id])
        except BackendError as exc:
            raise ApiError(500, "SANDBOX::RUNTIME_ERROR", str(exc)) from exc

    # Expiry and metadata.

    async def renew(self, sandbox_id: str, body: Any) -> str:
        """Set a new absolute expiry; returns it formatted. 400 if not in the future."""
        if not isinstance(body, dict) or not isinstance(body.get("expiresAt"), str):
            raise bad_request("body must be {'expiresAt': '<RFC 3339 time>'}", "SANDBOX::INVALID_EXPIRATION")
        try:
            expires = parse_time(body["expiresAt"])
        except ValueError:
            raise bad_request(
                f"expiresAt {body['expiresAt']!r} is not an RFC 3339 time", "SANDBOX::INVALID_EXPIRATION"
            ) from None
        now = utcnow()
        if expires <= now:
            raise bad_request("expiresAt must be in the future", "SANDBOX::INVALID_EXPIRATION")
        longest = self.config.max_timeout_seconds or MAX_SANDBOX_TIMEOUT_SECONDS  # what a create may ask
        if expires - now > timedelta(seconds=longest):
            raise bad_request(
                f"expiresAt must be at most {longest} seconds from now", "SANDBOX::INVALID_EXPIRATION"
            )
        async with self._lock(sandbox_id):
            record = await self._refresh(self._record(sandbox_id))
            if record.expires_at is None:
                raise conflict(
                    "SANDBOX::INVALID_EXPIRATION",
                    f"Sandbox {sandbox_id!r} has no expiry (created without a timeout: manual cleanup)",
                )
            if record.state not in ("Running", "Paused"):
                raise conflict("SANDBOX::SANDBOX_NOT_RUNNING", f"Sandbox {sandbox_id!r} is {record.state}")
            record.expires_at = format_time(expires)
            self._save(record)
            self._deadlines[sandbox_id] = expires
            self._reaper.poke()
        return record.expires_at

    async def patch_metadata(self, sandbox_id: str, body: Any) -> SandboxRecord:
        """Apply a JSON merge patch to the metadata; returns the updated record."""
        patch = parse_metadata_patch(body)
        async with self._lock(sandbox_id):
            record = self._record(sandbox_id)
            for key, value in patch.items():
                if value is None:
                    record.metadata.pop(key, None)
                else:
                    record.metadata[key] = value
            self._save(record)
        return record

    def _next_deadline(self) -> datetime | None:
        return min(self._deadlines.values(), default=None)

    async def _expire_due(self, now: datetime) -> None:
        for sandbox_id, deadline in list(self._deadlines.items()):
            if deadline > now:
                continue
            self._deadlines.pop(sandbox_id, None)
            with contextlib.suppress(ApiError):  # already deleted
                await self.delete(sandbox_id, reason="ttl_expiry")

    # Helpers.

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _state_dir(self, sandbox_id: str) -> Path:
        return self.config.sandboxes_dir / sandbox_id

    def _spec(self, record: SandboxRecord, settings: LaunchSettings | None = None) -> SandboxSpec:
        return SandboxSpec(
            sandbox_id=record.id,
            entrypoint=list(record.entrypoint),
            state_dir=self._state_dir(record.id),
            env=dict(record.env) if settings is None else settings.env,
            image=None if settings is None else settings.image,
            cpu_cores=record.cpu_cores,
            memory_bytes=record.memory_bytes,
            pids_max=record.pids_max,
            disk_bytes=record.disk_bytes,
            mounts=[
                Mount(
                    Path(m["host_path"]),
                    m["sandbox_path"],
                    bool(m["read_only"]),
                    Path(m["beneath"]) if m.get("beneath") else None,
                )
                for m in record.mounts
            ],
            network=self._network(record),
        )

    def _network(self, record: SandboxRecord) -> NetworkChoice:
        """The network the record asks for (checked at create; a record that no longer parses gets
        none: fail-closed)."""
        try:
            return network_choice(
                self.config.network,
                record.extras.get("networkPolicy"),
                record.extensions.get(NETWORK_EXTENSION),
                record.extras.get("credentialProxy"),
            )
        except PolicyError as exc:
            _log.warning("sandbox %s gets no network: %s", record.id, exc)
            return NetworkChoice()

    def _save(self, record: SandboxRecord) -> None:
        self.store.put_sandbox(
            record.id, created_at=record.created_at, state=record.state, doc=record.to_doc()
        )

    def _transition(self, record: SandboxRecord, state: str, reason: str, message: str) -> None:
        at = record.set_status(state, reason, message)
        self._save(record)
        self.store.add_event(record.id, at=at, state=state, reason=reason, message=message)
