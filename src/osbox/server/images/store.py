"""The image store: pull or load images, unpack each layer once, hand out root filesystems.

    <root>/oci/              an OCI image layout; `blobs/sha256` holds every manifest, config and
                             layer blob once, whichever images share it (skopeo's destination)
    <root>/layers/<hex>/     one unpacked layer per diff_id (its uncompressed digest): an overlayfs
                             lowerdir, shared by every image that has the layer
    <root>/state.json        the store's truth: image names -> manifest; unpacked layer sizes
    <root>/used/<hash>       one empty file per image name: its mtime is the image's last use
    <root>/lock              flock: one writer at a time (pull, load, rm, prune), across processes

All methods block (skopeo, unpacking): a server calls them from a worker thread. Readers take no
lock (state.json is replaced atomically, a last use is a utime), so `rootfs()` of a stored image
never waits behind another image's pull.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ServerConfig
from .errors import (
    ArchiveError,
    ImageError,
    ImageInUse,
    ImageNotFound,
    InvalidReference,
    StoreFull,
    UnsafeLayer,
)
from .layers import LayerUnpacker, unpacking
from .layout import ImageConfig, Manifest, OciLayout
from .platform import Platform, host_platform
from .reference import ImageReference, parse_reference
from .skopeo import Credentials, copy_image

__all__ = [
    "ImageHold",
    "ImageRecord",
    "ImageStore",
    "ImageStoreConfig",
    "PruneResult",
    "PullProgress",
    "RootFS",
]

_log = logging.getLogger("osbox.images")
GIB = 1 << 30


@dataclass(frozen=True)
class ImageStoreConfig:
    """Settings of the image store (ServerConfig-like; to join ServerConfig when wired in)."""

    root: Path
    #: Blobs plus unpacked layers above this evict the least recently used images not in use.
    max_bytes: int = 20 * GIB
    #: A pull (or load) that takes longer fails with PullTimeout.
    pull_timeout_seconds: float = 600.0
    #: Registry mirrors, as a container engine's `registry-mirrors`: {"docker.io": "mirror:5000"}
    #: pulls `python:3.12` from `mirror:5000/library/python:3.12`; the image keeps its own name.
    mirrors: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_server(cls, config: ServerConfig) -> ImageStoreConfig:
        """The store a server with `config` uses (and `osbox image` with the same data dir)."""
        return cls(
            root=config.images_dir,
            max_bytes=config.image_store_max_bytes,
            pull_timeout_seconds=config.image_pull_timeout_seconds,
            mirrors=dict(config.registry_mirrors),
        )


@dataclass(frozen=True)
class ImageRecord:
    """One named image in the store (what `osbox image ls` shows)."""

    name: str
    digest: str  # the manifest's
    size: int  # its blobs (compressed layers + config + manifest)
    platform: str
    last_used: float


@dataclass(frozen=True)
class RootFS:
    """What a backend mounts: overlay lowerdirs (lowest first) and the config to start it with."""

    name: str
    digest: str
    layers: tuple[Path, ...]
    config: ImageConfig


class ImageHold:
    """A running sandbox's claim on its image (`ImageStore.hold`); `close()` gives it up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class PullProgress:
    """Progress of a copy into the store: blobs started so far and bytes received."""

    blobs: int
    bytes_received: int
    current: str = ""  # skopeo's last line, e.g. "Copying blob sha256:…"


@dataclass(frozen=True)
class PruneResult:
    """What `prune` removed."""

    blobs: int = 0
    layers: int = 0
    bytes_freed: int = 0


@dataclass
class _State:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)  # diff_id -> unpacked file bytes


class ImageStore:
    """A content-addressed image and layer store under `config.root`."""

    def __init__(self, config: ImageStoreConfig, in_use: Callable[[], Collection[str]] = frozenset) -> None:
        """`in_use` names the images sandboxes are using now: never evicted by the size cap."""
        self.config = config
        self._in_use = in_use
        self.root = config.root
        self.oci = OciLayout(self.root / "oci")
        self._layers_dir = self.root / "layers"
        self._staging = self.root / "staging"
        self._used = self.root / "used"
        for directory in (self.root, self.oci.blobs, self._layers_dir, self._staging, self._used):
            directory.mkdir(parents=True, exist_ok=True)
        # Root only: layers hold images' setuid binaries and device nodes, which no host user may reach.
        # (An overlay mounted by root looks its lowerdirs up with the mounter's credentials.)
        self.root.chmod(0o700)

    # --- getting images in ---------------------------------------------------------------------

    def ensure(
        self,
        reference: str,
        *,
        credentials: Credentials | None = None,
        platform: Platform | None = None,
        on_progress: Callable[[PullProgress], None] | None = None,
    ) -> RootFS:
        """The image's root filesystem, pulling it first unless the store has it (for this platform).

        Concurrent calls for the same image pull it once: the second waits for the lock, then finds it.
        """
        ref = parse_reference(reference)
        wanted = str(platform or host_platform())  # as records name it: os/architecture[/variant]
        record = self._state().images.get(str(ref))
        if record is None or record["platform"] != wanted:
            with self._locked():
                record = self._state().images.get(str(ref))
                if record is None or record["platform"] != wanted:
                    self._pull_locked(ref, credentials, platform, on_progress)
        return self.rootfs(str(ref))

    def pull(
        self,
        reference: str,
        *,
        credentials: Credentials | None = None,
        platform: Platform | None = None,
        on_progress: Callable[[PullProgress], None] | None = None,
    ) -> ImageRecord:
        """Pull `reference` from its registry (again, if the store has it: a tag may have moved)."""
        ref = parse_reference(reference)
        with self._locked():
            return self._pull_locked(ref, credentials, platform, on_progress)

    def _pull_locked(
        self,
        ref: ImageReference,
        credentials: Credentials | None,
        platform: Platform | None,
        on_progress: Callable[[PullProgress], None] | None,
    ) -> ImageRecord:
        mirror = self.config.mirrors.get(ref.registry)
        source = ref if mirror is None else dataclasses.replace(ref, registry=mirror)
        return self._copy_in(
            source.transport,
            [str(ref)],
            what=f"pulling {ref}" + ("" if mirror is None else f" from the mirror {mirror}"),
            on_progress=on_progress,
            registry=source.registry,
            credentials=credentials,
            platform=platform,
        )[0]

    def load(
        self,
        archive: Path,
        *,
        name: str | None = None,
        on_progress: Callable[[PullProgress], None] | None = None,
    ) -> list[ImageRecord]:
        """Load a `docker save` tarball or an OCI layout tar; the images it named (or `name`)."""
        sources = _archive_sources(archive, name)
        records = []
        with self._locked():
            for source, names in sources:
                records += self._copy_in(
                    source, names, what=f"loading {archive.name}", on_progress=on_progress
                )
        return records

    def _copy_in(
        self,
        source: str,
        names: list[str],
        *,
        what: str,
        on_progress: Callable[[PullProgress], None] | None,
        registry: str | None = None,
        credentials: Credentials | None = None,
        platform: Platform | None = None,
    ) -> list[ImageRecord]:
        """Copy `source` into the layout and name it `names`; a failure leaves nothing behind.

        Called with the writer lock held.
        """
        ref_name = f"copy-{uuid.uuid4().hex}"
        try:
            with self._unpacking() as unpacker:
                with self._watching(on_progress) as on_line:
                    copy_image(
                        source,
                        f"oci:{self.oci.root}:{ref_name}",
                        registry=registry,
                        credentials=credentials,
                        platform=platform or host_platform(),
                        timeout_seconds=self.config.pull_timeout_seconds,
                        what=what,
                        on_progress=on_line,
                    )
                return self._adopt(ref_name, names, unpacker)
        except ImageError:
            self._prune_locked()  # the failed copy's blobs and index entry, its staging dirs
            raise

    def _adopt(self, ref_name: str, names: list[str], unpacker: LayerUnpacker) -> list[ImageRecord]:
        """Name the manifest skopeo just wrote, install its unpacked layers, enforce the size cap."""
        digest = self.oci.take(ref_name)
        manifest = self.oci.manifest(digest)
        state = self._state()
        missing = {
            diff_id: blob_digest
            for blob_digest, diff_id in zip(manifest.layer_digests, manifest.diff_ids, strict=True)
            if diff_id not in state.layers or not self._layer_dir(diff_id).is_dir()
        }
        for blob_digest in missing.values():
            unpacker.start(blob_digest)  # all at once: those the watcher did not start yet
        for diff_id, blob_digest in missing.items():
            state.layers[diff_id] = unpacker.install(blob_digest, diff_id, self._layer_dir(diff_id))
        for name in names:
            state.images[name] = {
                "digest": manifest.digest,
                "platform": manifest.platform,
                "size": manifest.size,
            }
            self._touch(name)
        self._save(state)
        self._enforce_cap(protect=set(names))
        return [self._record(name, state.images[name]) for name in names]

    def _unpacking(self) -> contextlib.AbstractContextManager[LayerUnpacker]:
        # No single layer may expand beyond the whole store's cap.
        return unpacking(self.oci, self._staging, max_bytes=self.config.max_bytes, watch=True)

    def _layer_dir(self, diff_id: str) -> Path:
        return self._layers_dir / self.oci.blob_path(diff_id).name

    # --- using images --------------------------------------------------------------------------

    def rootfs(self, reference: str) -> RootFS:
        """The layer dirs (lowest first) and config of a stored image; marks it used now."""
        name = str(parse_reference(reference))
        record = self._state().images.get(name)
        if record is None:
            raise ImageNotFound(f"no image {name} in the store (pull or load it first)")
        self._touch(name)
        manifest = self.oci.manifest(record["digest"])
        layers = tuple(self._layer_dir(diff_id) for diff_id in manifest.diff_ids)
        return RootFS(name=name, digest=manifest.digest, layers=layers, config=manifest.config)

    def list(self) -> list[ImageRecord]:
        """Every named image, by name."""
        return [self._record(name, record) for name, record in sorted(self._state().images.items())]

    def remove(self, reference: str) -> None:
        """Drop an image's name; its data stays until `prune` (layers may be shared). An image a
        running sandbox uses (`hold`, in any process) is an `ImageInUse`."""
        name = _lookup_name(reference)
        with self._locked():
            state = self._state()
            if name not in state.images:
                raise ImageNotFound(f"no image {name} in the store")
            if self._held(name):
                raise ImageInUse(f"image {name} is used by a running sandbox: delete the sandbox first")
            del state.images[name]
            self._save(state)
            self._used_file(name).unlink(missing_ok=True)

    def prune(self) -> PruneResult:
        """Remove blobs and unpacked layers no named image references, and leftovers of crashes."""
        with self._locked():
            return self._prune_locked()

    def usage(self) -> int:
        """Bytes the store holds: every blob plus the files of every unpacked layer."""
        state = self._state()
        return _blob_bytes(self.oci.blobs) + sum(state.layers.values())

    # --- housekeeping --------------------------------------------------------------------------

    def _prune_locked(self) -> PruneResult:
        state = self._state()
        manifests = {
            digest: self.oci.manifest(digest) for digest in {r["digest"] for r in state.images.values()}
        }
        live_blobs = {
            _hex(d) for m in manifests.values() for d in (m.digest, m.config_digest, *m.layer_digests)
        }
        live_layers = {_hex(d) for m in manifests.values() for d in m.diff_ids}
        blobs = layers = freed = 0
        for blob in self.oci.blobs.iterdir():
            if blob.name not in live_blobs:
                freed += blob.stat().st_size
                blob.unlink()
                blobs += 1
        for layer in self._layers_dir.iterdir():
            if layer.name not in live_layers:
                freed += state.layers.pop(f"sha256:{layer.name}", 0)
                shutil.rmtree(layer)
                layers += 1
        state.layers = {d: n for d, n in state.layers.items() if _hex(d) in live_layers}
        for leftover in [*self._staging.iterdir(), *self.oci.root.glob("oci-put-blob*")]:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        self.oci.drop_names()
        self._save(state)
        return PruneResult(blobs=blobs, layers=layers, bytes_freed=freed)

    def _enforce_cap(self, protect: Collection[str]) -> None:
        """Evict least recently used images (not in use, not just added) while over the cap."""
        if self.usage() <= self.config.max_bytes:
            return
        keep = set(protect) | set(self._in_use())
        state = self._state()
        for name in sorted(state.images, key=self._last_used):
            if self.usage() <= self.config.max_bytes:
                return
            if name in keep or self._held(name):
                continue
            _log.info("image store over its cap (%d bytes): evicting %s", self.config.max_bytes, name)
            del state.images[name]
            self._save(state)
            self._used_file(name).unlink(missing_ok=True)
            self._prune_locked()
        if self.usage() > self.config.max_bytes:
            for name in protect:
                state.images.pop(name, None)
                self._used_file(name).unlink(missing_ok=True)
            self._save(state)
            self._prune_locked()
            raise StoreFull(
                f"the image store's cap is {self.config.max_bytes} bytes and the images in use plus "
                f"{', '.join(protect)} need more: raise the cap or remove images"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock is per open file description: threads of one process exclude each other too.
        with (self.root / "lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _state(self) -> _State:
        try:
            document = json.loads((self.root / "state.json").read_bytes())
        except FileNotFoundError:
            return _State()
        return _State(images=document.get("images", {}), layers=document.get("layers", {}))

    def _save(self, state: _State) -> None:
        temporary = self.root / "state.json.tmp"
        temporary.write_text(json.dumps(asdict(state), indent=1, sort_keys=True))
        os.replace(temporary, self.root / "state.json")

    def _record(self, name: str, record: dict[str, Any]) -> ImageRecord:
        return ImageRecord(name, record["digest"], record["size"], record["platform"], self._last_used(name))

    def hold(self, name: str) -> ImageHold:
        """Keep `name` from removal and eviction, by every process sharing the store, until the
        hold is closed (or its process ends): a shared `flock` of the image's use file."""
        fd = os.open(self._used_file(name), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return ImageHold(fd)

    def _held(self, name: str) -> bool:
        """Whether some process holds `name` (see `hold`)."""
        try:
            fd = os.open(self._used_file(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases the probe's lock, if it got it
        return False

    def _used_file(self, name: str) -> Path:
        return self._used / hashlib.sha256(name.encode()).hexdigest()

    def _touch(self, name: str) -> None:
        """Mark `name` used now: a utime, atomic and lock-free (the LRU order of the size cap)."""
        path = self._used_file(name)
        path.touch()
        os.utime(path)

    def _last_used(self, name: str) -> float:
        try:
            return self._used_file(name).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    @contextlib.contextmanager
    def _watching(
        self, on_progress: Callable[[PullProgress], None] | None
    ) -> Iterator[Callable[[str], None] | None]:
        """Feed `on_progress` from skopeo's lines and, every 0.2 s, the bytes of blobs being written."""
        if on_progress is None:
            yield None
            return
        before = {blob.name for blob in self.oci.blobs.iterdir()}
        blobs_started = 0
        last_line = ""
        done = threading.Event()

        def received() -> int:
            new = [b for b in self.oci.blobs.iterdir() if b.name not in before]
            partial = list(self.oci.root.glob("oci-put-blob*"))
            return sum(_size_or_zero(path) for path in [*new, *partial])

        def report() -> None:
            on_progress(PullProgress(blobs_started, received(), last_line))

        def on_line(line: str) -> None:
            nonlocal blobs_started, last_line
            if line.startswith("Copying blob"):
                blobs_started += 1
            last_line = line
            report()

        def poll() -> None:
            while not done.wait(0.2):
                report()

        poller = threading.Thread(target=poll, name="image-progress", daemon=True)
        poller.start()
        try:
            yield on_line
        finally:
            done.set()
            poller.join()
            report()


def _lookup_name(reference: str) -> str:
    try:
        return str(parse_reference(reference))
    except InvalidReference:
        raise ImageNotFound(f"no image {reference!r} in the store") from None


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _blob_bytes(directory: Path) -> int:
    return sum(_size_or_zero(blob) for blob in directory.iterdir())


def _archive_sources(archive: Path, name: str | None) -> list[tuple[str, list[str]]]:
    """skopeo sources for each image of an archive, with the names to give them."""
    try:
        with tarfile.open(archive) as tar:
            members = {member.name.removeprefix("./"): member for member in tar.getmembers()}

            def read_json(member_name: str) -> Any:
                handle = tar.extractfile(members[member_name])
                if handle is None:
                    raise ArchiveError(f"{archive.name}: {member_name} is not a file")
                return json.load(handle)

            if "manifest.json" in members:
                images = read_json("manifest.json")
                transport = "docker-archive"
                tags = [list(image.get("RepoTags") or []) for image in images]
            elif "index.json" in members:
                images = read_json("index.json").get("manifests", [])
                transport = "oci-archive"
                tags = [[_oci_name(image)] if _oci_name(image) else [] for image in images]
            else:
                raise ArchiveError(f"{archive.name}: neither a `docker save` archive nor an OCI layout tar")
    except (OSError, tarfile.TarError, json.JSONDecodeError) as error:
        raise ArchiveError(f"{archive.name}: not a readable image archive ({error})") from None
    if not images:
        raise ArchiveError(f"{archive.name}: the archive holds no image")
    if name is not None and len(images) != 1:
        raise ArchiveError(f"{archive.name}: holds {len(images)} images; a name can be given for one only")
    sources = []
    for position, image_tags in enumerate(tags):
        names = [name] if name is not None else image_tags
        if not names:
            raise ArchiveError(f"{archive.name}: image {position + 1} has no name: give one (--name)")
        try:
            canonical = [str(parse_reference(n)) for n in names]
        except InvalidReference as error:
            raise ArchiveError(f"{archive.name}: {error}") from None
        if transport == "docker-archive":
            source = f"docker-archive:{archive}" + (f":@{position}" if len(images) > 1 else "")
        else:
            ref_name = (images[position].get("annotations") or {}).get("org.opencontainers.image.ref.name")
            source = f"oci-archive:{archive}" + (f":{ref_name}" if len(images) > 1 and ref_name else "")
        sources.append((source, canonical))
    return sources


def _oci_name(descriptor: dict[str, Any]) -> str | None:
    """An OCI index entry's image name: containerd's full name, else a ref.name that is a full reference."""
    annotations = descriptor.get("annotations") or {}
    full = annotations.get("io.containerd.image.name")
    if full:
        return str(full)
    ref_name = annotations.get("org.opencontainers.image.ref.name")
    if ref_name and ("/" in ref_name or ":" in ref_name):
        return str(ref_name)
    return None


# Re-exported for callers that catch everything the store raises.
__all__ += ["ImageError", "Manifest", "UnsafeLayer"]
