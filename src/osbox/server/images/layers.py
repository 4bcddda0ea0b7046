"""Unpacking an image's layers into the shared layer store, starting while skopeo still downloads.

skopeo writes each blob to a temp file and renames it into `blobs/sha256/` when complete, layers
before the config. A watcher thread sees each new layer blob appear and starts unpacking it at once
(into a staging dir, hashing its content), so unpacking overlaps the rest of the download. The diff_id
is known only once the config has arrived: `install` then checks each unpacked layer's digest against
the config before renaming it into `layers/<diff_id>/`. A layer blob that did not appear during the
copy (already stored, or from an archive) is unpacked on demand, the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .layout import OciLayout
from .unpack import check_diff_id, looks_like_layer, unpack_layer

__all__ = ["LayerUnpacker", "unpacking"]

_WORKERS = min(4, os.cpu_count() or 1)  # zlib, sha256 and writes release the GIL
_WATCH_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class _Unpacked:
    directory: Path  # a staging dir, renamed into the layer store by `install`
    file_bytes: int
    diff_id: str


class LayerUnpacker:
    """Unpacks layer blobs of one copy into staging dirs; `install` moves verified ones into place."""

    def __init__(self, layout: OciLayout, staging: Path, pool: ThreadPoolExecutor, max_bytes: int) -> None:
        self._layout = layout
        self._max_bytes = max_bytes
        self._staging = staging
        self._pool = pool
        self._lock = threading.Lock()
        self._jobs: dict[str, Future[_Unpacked]] = {}  # blob digest -> its unpacking
        self._known = {blob.name for blob in layout.blobs.iterdir()}

    def start(self, blob_digest: str) -> Future[_Unpacked]:
        """Start unpacking `blob_digest` unless that has started already; its future."""
        with self._lock:
            job = self._jobs.get(blob_digest)
            if job is None:
                job = self._jobs[blob_digest] = self._pool.submit(self._unpack, blob_digest)
            return job

    def watch_once(self) -> None:
        """Start unpacking every layer blob that appeared since the last look."""
        for blob in self._layout.blobs.iterdir():
            if blob.name not in self._known:
                self._known.add(blob.name)
                if looks_like_layer(blob):
                    self.start(f"sha256:{blob.name}")

    def install(self, blob_digest: str, diff_id: str, target: Path) -> int:
        """Wait for `blob_digest`'s unpacking, check it is `diff_id`, move it to `target`; its bytes."""
        unpacked = self.start(blob_digest).result()
        check_diff_id(unpacked.diff_id, diff_id)
        if target.exists():  # left by an interrupted earlier install: the verified copy replaces it
            shutil.rmtree(target)
        unpacked.directory.rename(target)
        return unpacked.file_bytes

    def discard(self) -> None:
        """Wait for every unpacking and remove the staging dirs `install` did not take."""
        for job in list(self._jobs.values()):
            if job.cancel():
                continue
            try:
                unpacked = job.result()
            except Exception:  # noqa: S112 - its own staging dir is already gone (see _unpack)
                continue
            shutil.rmtree(unpacked.directory, ignore_errors=True)

    def _unpack(self, blob_digest: str) -> _Unpacked:
        directory = Path(tempfile.mkdtemp(dir=self._staging))
        try:
            blob = self._layout.blob_path(blob_digest)
            file_bytes, diff_id = unpack_layer(blob, directory, None, max_bytes=self._max_bytes)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return _Unpacked(directory, file_bytes, diff_id)


@contextmanager
def unpacking(layout: OciLayout, staging: Path, *, max_bytes: int, watch: bool) -> Iterator[LayerUnpacker]:
    """A LayerUnpacker for one copy; with `watch`, new layer blobs start unpacking as they land.

    `max_bytes` bounds each layer's unpacked files.
    """
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="unpack") as pool:
        unpacker = LayerUnpacker(layout, staging, pool, max_bytes)

        def watch_blobs() -> None:
            while not stop.wait(_WATCH_INTERVAL_SECONDS):
                unpacker.watch_once()

        watcher = threading.Thread(target=watch_blobs, name="unpack-watch", daemon=True)
        if watch:
            watcher.start()
        try:
            yield unpacker
        finally:
            stop.set()
            if watch:
                watcher.join()
            unpacker.discard()
