"""Reading the store's OCI image layout: index.json entries, manifests, configs, blobs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError
from .reference import validate_digest

__all__ = ["ImageConfig", "Manifest", "OciLayout"]

_REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)


@dataclass(frozen=True)
class ImageConfig:
    """What a sandbox needs from an image's config to start it as the image says."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ImageConfig:
        """From an image config blob (its `config` object; absent fields are empty)."""
        section = document.get("config") or {}

        def argv(key: str) -> tuple[str, ...] | None:
            value = section.get(key)
            return tuple(str(part) for part in value) if isinstance(value, list) else None

        return cls(
            env=tuple(str(item) for item in section.get("Env") or ()),
            working_dir=str(section.get("WorkingDir") or ""),
            user=str(section.get("User") or ""),
            entrypoint=argv("Entrypoint"),
            cmd=argv("Cmd"),
        )


@dataclass(frozen=True)
class Manifest:
    """One image manifest: its config blob and its layers (lowest first) with their diff_ids."""

    digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    diff_ids: tuple[str, ...]
    config: ImageConfig
    platform: str  # os/architecture[/variant], from the config
    size: int  # manifest + config + compressed layers, as stored


class OciLayout:
    """The OCI image layout skopeo writes into; `blobs/sha256` is shared by every image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    def blob_path(self, digest: str) -> Path:
        """Where the blob `digest` is stored (the digest is validated: it becomes a file name)."""
        algorithm, _, encoded = validate_digest(digest).partition(":")
        if algorithm != "sha256":
            raise ImageError(f"unsupported digest algorithm in {digest!r}")
        return self.blobs / encoded

    def read_json(self, digest: str) -> dict[str, Any]:
        """A JSON blob (manifest or config)."""
        document: dict[str, Any] = json.loads(self.blob_path(digest).read_bytes())
        return document

    def _index(self) -> dict[str, Any]:
        try:
            index: dict[str, Any] = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        return index

    def take(self, ref_name: str) -> str:
        """Remove `ref_name`'s entry from index.json (the store keeps its own names); its digest."""
        index = self._index()
        entries = index.get("manifests", [])
        mine = [e for e in entries if e.get("annotations", {}).get(_REF_NAME) == ref_name]
        if not mine:
            raise ImageError(f"skopeo wrote no image named {ref_name!r} into the store")
        if mine[0].get("mediaType") in _INDEX_TYPES:
            raise ImageError("the store received an image index where one image was expected")
        index["manifests"] = [e for e in entries if e not in mine]
        self._write_index(index)
        return str(mine[0]["digest"])

    def drop_names(self, keep: frozenset[str] = frozenset()) -> None:
        """Remove index.json entries (left by interrupted copies) except those named in `keep`."""
        index = self._index()
        entries = index.get("manifests", [])
        kept = [e for e in entries if e.get("annotations", {}).get(_REF_NAME) in keep]
        if len(kept) != len(entries):
            index["manifests"] = kept
            self._write_index(index)

    def _write_index(self, index: dict[str, Any]) -> None:
        temporary = self.root / "index.json.tmp"
        temporary.write_text(json.dumps(index))
        os.replace(temporary, self.root / "index.json")

    def manifest(self, digest: str) -> Manifest:
        """Parse the image manifest `digest` and its config."""
        document = self.read_json(digest)
        layers = document.get("layers") or []
        config_digest = str(document["config"]["digest"])
        config = self.read_json(config_digest)
        diff_ids = tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or ())
        if len(diff_ids) != len(layers):
            raise ImageError(
                f"image {digest}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}"
            )
        for diff_id in diff_ids:
            validate_digest(diff_id)
        sizes = tuple(int(layer["size"]) for layer in layers)
        return Manifest(
            digest=digest,
            config_digest=config_digest,
            layer_digests=tuple(str(layer["digest"]) for layer in layers),
            layer_sizes=sizes,
            diff_ids=diff_ids,
            config=ImageConfig.from_json(config),
            platform="/".join(str(config[k]) for k in ("os", "architecture", "variant") if config.get(k)),
            size=self.blob_path(digest).stat().st_size + int(document["config"]["size"]) + sum(sizes),
        )
