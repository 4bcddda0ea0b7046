"""A Debian image built here with `mmdebstrap`: what `make demo` and the tests run, with no Docker Hub.

    layout = debian_image(Path("~/.cache/osbox-images").expanduser())
    # an OCI image layout with one image under the ref name "debian-python"

The image is Debian 12 (minbase) with python3, ipykernel and a few tools, a user `sandbox`
(1000:1000, home /home/sandbox) it runs as, and /workspace as its working directory: the same
shape a sandbox had on the host before images. A second layer holds a stand-in for the official
code-interpreter image's entrypoint, `/opt/code-interpreter/code-interpreter.sh`: a Jupyter kernel
whose shell channel listens on 127.0.0.1:44771, the port the official code-interpreter SDK probes.

Building takes about a minute (packages from the Debian mirror), so the result is cached under
`cache_dir`, keyed by the recipe: a second build is a lookup. Root only (mmdebstrap's root mode
makes the files' owners right).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .local_registry import LocalRegistry, local_registry
from .platform import host_platform

__all__ = [
    "CODE_INTERPRETER_SCRIPT",
    "DEBIAN_REF_NAME",
    "debian_environment",
    "debian_image",
    "debian_mirror",
]

DEBIAN_REF_NAME = "debian-python"
_SUITE = "bookworm"
_PACKAGES = (
    "python3",
    "python3-ipykernel",
    "procps",
    "curl",
    "ca-certificates",
    "iproute2",
    "netcat-openbsd",
    "dnsutils",
)
_CUSTOMIZE = (
    "chroot $1 useradd --uid 1000 --user-group --create-home --home-dir /home/sandbox "
    "--shell /bin/bash sandbox && mkdir -p $1/workspace && chown 1000:1000 $1/workspace"
)
_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
_CONFIG = {
    "User": "sandbox",
    "WorkingDir": "/workspace",
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
    "Cmd": ["/bin/bash"],
}
CODE_INTERPRETER_SCRIPT = "/opt/code-interpreter/code-interpreter.sh"
_CODE_INTERPRETER = """#!/bin/sh
# osbox's stand-in for the official code-interpreter image's entrypoint: a Jupyter kernel whose
# shell channel listens on 127.0.0.1:${JUPYTER_PORT:-44771}, which the official SDK probes before it
# calls the sandbox ready. Code contexts run through osbox's execd, in kernels of their own.
set -e
port=${JUPYTER_PORT:-44771}
connection=/tmp/code-interpreter-kernel.json
key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')
json='{"transport": "tcp", "ip": "127.0.0.1", "shell_port": %d, "iopub_port": %d, "stdin_port": %d,'
json="$json"' "control_port": %d, "hb_port": %d, "key": "%s", "signature_scheme": "hmac-sha256"}'
printf "$json\\n" "$port" $((port + 2)) $((port + 3)) $((port + 4)) $((port + 5)) "$key" > "$connection"
exec python3 -m ipykernel_launcher -f "$connection"
"""
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def _recipe_key(mirror: str) -> str:
    recipe = json.dumps(
        [_SUITE, _PACKAGES, _CUSTOMIZE, _EXCLUDE, _CONFIG, _CODE_INTERPRETER, mirror, str(host_platform())]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def debian_image(cache_dir: Path, *, mirror: str = "http://deb.debian.org/debian") -> Path:
    """The OCI layout holding the image (`DEBIAN_REF_NAME`), built unless `cache_dir` has it."""
    layout = cache_dir / f"debian-python-{_recipe_key(mirror)}"
    if (layout / "index.json").is_file():
        return layout
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="osbox-debian-", dir=cache_dir))
    try:
        tar = work / "rootfs.tar"
        command = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet"]
        command += [f"--include={','.join(_PACKAGES)}", f"--customize-hook={_CUSTOMIZE}"]
        command += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDE]
        command += [_SUITE, str(tar), mirror]
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
        staged = work / "layout"
        _write_layout(staged, tar)
        staged.rename(layout)  # whole or not at all: a half-built layout is never found
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"mmdebstrap failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return layout


def _write_layout(root: Path, tar: Path) -> None:
    """An OCI image layout: the rootfs tar and the code-interpreter script as zstd layers, and the config."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    script_tar = root / "script.tar"
    with tarfile.open(script_tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("opt", "opt/code-interpreter"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        data = _CODE_INTERPRETER.encode()
        info = tarfile.TarInfo(CODE_INTERPRETER_SCRIPT.lstrip("/"))
        info.mode, info.size = 0o755, len(data)
        archive.addfile(info, io.BytesIO(data))
    layers, diff_ids = [], []
    for path in (tar, script_tar):
        diff_ids.append(_sha256_file(path))
        compressed = path.with_suffix(".tar.zst")
        subprocess.run(["zstd", "-q", "-T0", "-6", str(path), "-o", str(compressed)], check=True, timeout=600)
        layers.append(_move_blob(blobs, compressed, _ZSTD_LAYER))
    script_tar.unlink()
    platform = host_platform()
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": _CONFIG,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "config": _bytes_blob(blobs, json.dumps(config).encode(), _OCI_CONFIG),
        "layers": layers,
    }
    descriptor = _bytes_blob(blobs, json.dumps(manifest).encode(), _OCI_MANIFEST)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": DEBIAN_REF_NAME}
    index = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": [descriptor]}
    (root / "index.json").write_text(json.dumps(index))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _move_blob(blobs: Path, path: Path, media_type: str) -> dict[str, Any]:
    digest = _sha256_file(path)
    size = path.stat().st_size
    os.replace(path, blobs / digest.removeprefix("sha256:"))
    return {"mediaType": media_type, "digest": digest, "size": size}


def _bytes_blob(blobs: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


@contextlib.contextmanager
def debian_mirror(cache_dir: Path, names: Sequence[str], *, pull: bool = True) -> Iterator[LocalRegistry]:
    """Serve the Debian image as each of `names` (`library/python:3.11`, ...) from a throw-away
    registry on 127.0.0.1 until the block ends; yields the registry, whose `host` is to be given as
    the `docker.io` mirror (`ServerConfig.registry_mirrors`, `$OSBOX_REGISTRY_MIRRORS`).

    With `pull`, the names are pulled into the store at `cache_dir/store` first (a server with that
    store then creates their sandboxes at once, not `Pending`).
    """
    from .store import ImageStore, ImageStoreConfig

    layout = debian_image(cache_dir)
    with local_registry() as registry:
        for name in names:
            registry.push(layout, DEBIAN_REF_NAME, name)
        if pull:
            store = ImageStore(
                ImageStoreConfig(root=cache_dir / "store", mirrors={"docker.io": registry.host})
            )
            for name in names:
                store.ensure(name.removeprefix("library/"))
        yield registry


@contextlib.contextmanager
def debian_environment(cache_dir: Path, names: Sequence[str]) -> Iterator[LocalRegistry]:
    """`debian_mirror`, and this process's environment pointing the servers it starts at it
    (`$OSBOX_REGISTRY_MIRRORS` for docker.io, `$OSBOX_IMAGE_STORE` at `cache_dir/store`) until the
    block ends: how the tests and the benchmarks run `python:3.11` with no internet."""
    keys = ("OSBOX_REGISTRY_MIRRORS", "OSBOX_IMAGE_STORE")
    saved = {key: os.environ.get(key) for key in keys}
    with debian_mirror(cache_dir, names) as registry:
        os.environ["OSBOX_REGISTRY_MIRRORS"] = f"docker.io={registry.host}"
        os.environ["OSBOX_IMAGE_STORE"] = str(cache_dir / "store")
        try:
            yield registry
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
