"""A throw-away local registry and tiny test images built here, with no internet.

`LocalRegistry` runs Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1 from a config in
a temp dir, optionally behind htpasswd basic auth. `OciLayoutBuilder` writes OCI images (tar+gzip or
tar+zstd layers, single-platform or a multi-arch index) into an OCI layout that `skopeo copy` pushes
to the registry exactly as `docker push` would. Used by the image tests and benchmarks/bench_image_pull.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbox.server.images.platform import Platform, host_platform

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = (
    *("sh", "ls", "cat", "echo", "id", "true", "test", "uname"),
    *("sleep", "tail", "pwd", "mkdir", "rm", "head"),
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
TEST_USER = "tester"


def tools_missing() -> str | None:
    """Why the registry tests can't run here, or None when they can."""
    for tool, package in (
        ("skopeo", "skopeo"),
        ("docker-registry", "docker-registry"),
        ("htpasswd", "apache2-utils"),
        ("zstd", "zstd"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt-get install {package}"
    if not BUSYBOX.exists() or b"ELF" not in BUSYBOX.read_bytes()[:4]:
        return "busybox is not installed: apt-get install busybox-static"
    return None


# --- layers -------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One tar entry of a test layer."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)


def file(
    name: str,
    data: bytes | str = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    xattrs: dict[str, str] | None = None,
) -> Entry:
    """A regular file entry."""
    content = data.encode() if isinstance(data, str) else data
    return Entry(name, tarfile.REGTYPE, content, mode, uid=uid, gid=gid, xattrs=xattrs or {})


def directory(name: str, mode: int = 0o755) -> Entry:
    """A directory entry."""
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    """A symbolic link entry."""
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    """A hard link entry (target: a path in the archive)."""
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    """An uncompressed, reproducible tar of `entries` (fixed mtimes, in the given order)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = 1_700_000_000
            info.linkname = entry.linkname
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            info.size = len(entry.data) if entry.kind == tarfile.REGTYPE else 0
            info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in entry.xattrs.items()}
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return buffer.getvalue()


def busybox_layer(os_name: str = "busybox test image") -> list[Entry]:
    """A root filesystem of one static busybox binary plus applet symlinks, and an /etc."""
    entries = [directory("bin"), file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    entries += [
        directory("etc"),
        file("etc/os-release", f'NAME="{os_name}"\nID=busybox\n'),
        file("etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n{TEST_USER}:x:1000:1000::/home:/bin/sh\n"),
        file("etc/group", f"root:x:0:\n{TEST_USER}:x:1000:\n"),
        directory("tmp", 0o1777),
    ]
    return entries


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed header mtime, so equal layers give equal blobs."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    """zstd via Debian's `zstd` (Python 3.11 has no zstd module)."""
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


def sha256(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- OCI layouts ---------------------------------------------------------------------------------


@dataclass
class ImageSpec:
    """What a test image holds: its layers (lowest first) and config fields."""

    layers: Sequence[Sequence[Entry]]
    compression: str = "gzip"  # or "zstd" (every layer)
    config: dict[str, Any] = field(default_factory=dict)  # Env, WorkingDir, User, Entrypoint, Cmd
    platform: Platform = field(default_factory=host_platform)


class OciLayoutBuilder:
    """Writes images into an OCI image layout directory, each under a ref name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self._index: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        """Store `data`; its descriptor."""
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, spec: ImageSpec) -> dict[str, Any]:
        """Store one single-platform image; the descriptor of its manifest."""
        layer_descriptors, diff_ids = [], []
        for entries in spec.layers:
            raw = tar_bytes(entries)
            diff_ids.append(sha256(raw))
            if spec.compression == "zstd":
                compressed, media_type = zstd_bytes(raw), "application/vnd.oci.image.layer.v1.tar+zstd"
            else:
                compressed, media_type = gzip_bytes(raw), "application/vnd.oci.image.layer.v1.tar+gzip"
            layer_descriptors.append(self.blob(compressed, media_type))
        config = {
            "architecture": spec.platform.architecture,
            "os": spec.platform.os,
            "config": spec.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if spec.platform.variant:
            config["variant"] = spec.platform.variant
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(json.dumps(config).encode(), OCI_CONFIG),
            "layers": layer_descriptors,
        }
        descriptor = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        descriptor["platform"] = spec.platform.as_oci()
        return descriptor

    def add(self, ref_name: str, spec: ImageSpec) -> None:
        """A single-platform image under `ref_name`."""
        self._tag(ref_name, self.image(spec))

    def add_index(self, ref_name: str, specs: Sequence[ImageSpec]) -> None:
        """A multi-platform image index of `specs` under `ref_name`."""
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [self.image(s) for s in specs]}
        self._tag(ref_name, self.blob(json.dumps(index).encode(), OCI_INDEX))

    def _tag(self, ref_name: str, descriptor: dict[str, Any]) -> None:
        descriptor = dict(descriptor, annotations={"org.opencontainers.image.ref.name": ref_name})
        descriptor.pop("platform", None)
        self._index = [d for d in self._index if d["annotations"] != descriptor["annotations"]]
        self._index.append(descriptor)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._index}
        (self.root / "index.json").write_text(json.dumps(index))
