"""Turn JSON request bodies into checked values, or a 400 naming exactly what is wrong.

Pure functions (apart from looking at host paths for `host` volumes and at named volumes):
nothing here starts or changes a sandbox. A volume's `subPath` is looked at without following
symlinks, since sandboxes can write below it (see `osbox.server._confined`).
"""

from __future__ import annotations

import math
import os
import platform as host_platform
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

from .._confined import is_symlink_refusal, open_under
from ..egress.networks import NETWORK_EXTENSION, network_choice
from ..egress.policy import PolicyError
from ..egress.sandbox_network import NetworkMode
from ..images.errors import InvalidReference
from ..images.reference import parse_reference
from ..images.skopeo import Credentials
from .errors import ApiError, bad_request

__all__ = [
    "RESERVED_METADATA_PREFIX",
    "CreateParams",
    "parse_cpu",
    "parse_create_request",
    "parse_memory",
    "parse_metadata_filter",
    "parse_metadata_patch",
    "parse_query_int",
    "validate_metadata",
]

RESERVED_METADATA_PREFIX = "opensandbox.io/"
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# ASCII digits only (`\d` would take any script's digits), at most 30 of them before the unit.
_CPU = re.compile(r"^([0-9]{1,30}(?:\.[0-9]{1,30})?)(m?)$")
_MEMORY = re.compile(r"^([0-9]{1,30}(?:\.[0-9]{1,30})?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
#: Upper bounds, far above any host, that keep the values within what the kernel's cgroup files and
#: the expiry timers take: a CPU quota of 65536 cores, 1 EiB of memory, a century of lifetime
#: (past 2**31 - 1 seconds, which callers use for "forever"; null is the way to ask for no expiry).
_DIGITS = re.compile(r"[0-9]{1,18}")
_QUERY_INT = re.compile(r"-?[0-9]{1,9}")
MAX_CPU_CORES = 65536
MAX_MEMORY_BYTES = 2**60
MAX_SANDBOX_TIMEOUT_SECONDS = 100 * 365 * 24 * 3600
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_RENEW_EXTENSION = "access.renew.extend.seconds"


@dataclass
class CreateParams:
    """A checked `CreateSandboxRequest`."""

    image: dict[str, str] | None
    snapshot_id: str | None
    entrypoint: list[str] | None
    timeout_seconds: int | None
    cpu_cores: float | None
    memory_bytes: int | None
    env: dict[str, str] = field(repr=False)
    metadata: dict[str, str]
    platform: dict[str, str] | None
    #: Each {"host_path", "sandbox_path", "read_only", "create"}; `create` marks pvc dirs to make.
    mounts: list[dict[str, Any]]
    extensions: dict[str, str]
    extras: dict[str, Any]
    #: `resourceLimits["ephemeral-storage"]` (alias `disk`); None: the server's default.
    disk_bytes: int | None = None
    #: The image a snapshot restore runs (the snapshot's; the request itself names none).
    restore_image: dict[str, str] | None = None
    #: `image.auth`: used for the pull, never stored.
    image_auth: Credentials | None = field(default=None, repr=False)


def _quoted(text: str) -> str:
    """`text` for an error message, cut short: a 400-digit number need not come back whole."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_cpu(text: str) -> float:
    """`"500m"` → 0.5 cores, `"2"` → 2.0. Raises a 400 ApiError when malformed or out of range."""
    match = _CPU.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        shown = _quoted(text) if isinstance(text, str) else repr(text)
        raise bad_request(f"resourceLimits.cpu {shown} is not a CPU quantity such as '500m' or '2'")
    cores = Decimal(match.group(1)) / (1000 if match.group(2) else 1)
    if cores <= 0:
        raise bad_request("resourceLimits.cpu must be greater than zero")
    if cores > MAX_CPU_CORES:
        raise bad_request(f"resourceLimits.cpu must be at most {MAX_CPU_CORES} cores")
    return float(cores)


def parse_memory(text: str) -> int:
    """`"512Mi"` → 536870912 bytes, `"1G"` → 10**9. Raises a 400 ApiError when malformed or out of range."""
    match = _MEMORY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        shown = _quoted(text) if isinstance(text, str) else repr(text)
        raise bad_request(f"resourceLimits.memory {shown} is not a memory quantity such as '512Mi' or '1Gi'")
    amount = math.floor(Decimal(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if amount < 4 * 2**20:
        raise bad_request("resourceLimits.memory must be at least 4Mi")
    if amount > MAX_MEMORY_BYTES:
        raise bad_request("resourceLimits.memory must be at most 1Ei")
    return amount


def parse_query_int(text: str | None, name: str, default: int) -> int:
    """An integer query parameter such as `page` or `pageSize` (`default` when absent); 400 if malformed."""
    if text is None or text == "":
        return default
    if not _QUERY_INT.fullmatch(text.strip()):
        raise bad_request(f"{name} must be an integer of at most 9 digits, not {_quoted(text)}")
    return int(text)


def _expect_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON object")
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    mapping = _expect_dict(value, where)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise bad_request(f"{where}.{key} must be a string")
    return dict(mapping)


def _check_label_key(key: str) -> None:
    if key.startswith(RESERVED_METADATA_PREFIX):
        raise bad_request(f"metadata key {key!r}: the prefix {RESERVED_METADATA_PREFIX!r} is reserved")
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise bad_request(f"metadata key {key!r}: the prefix must be a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.match(name):
        raise bad_request(
            f"metadata key {key!r} is not a valid label name (at most 63 characters: letters, digits, "
            "'-', '_', '.', starting and ending with a letter or digit)"
        )


def _check_label_value(key: str, value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise bad_request(
            f"metadata value for {key!r} is not a valid label value (at most 63 characters: letters, "
            "digits, '-', '_', '.', starting and ending with a letter or digit; no spaces)"
        )


def validate_metadata(value: Any) -> dict[str, str]:
    """Check a metadata map against Kubernetes label rules and the reserved prefix."""
    metadata = _string_map(value, "metadata")
    for key, item in metadata.items():
        _check_label_key(key)
        _check_label_value(key, item)
    return metadata


def parse_metadata_patch(value: Any) -> dict[str, str | None]:
    """Check a JSON merge patch for metadata: string values set, null deletes."""
    patch = _expect_dict(value, "metadata patch")
    for key, item in patch.items():
        if item is not None and not isinstance(item, str):
            raise bad_request(f"metadata patch value for {key!r} must be a string or null")
        _check_label_key(key)
        if item is not None:
            _check_label_value(key, item)
    return dict(patch)


def parse_metadata_filter(text: str) -> dict[str, str]:
    """`"k=v&k2=v2"` (already URL-decoded once by the query parser) → {"k": "v", "k2": "v2"}."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise bad_request(f"metadata filter {text!r} must look like 'key=value&key2=value2'") from None
    return dict(pairs)


def _parse_timeout(value: Any, min_seconds: int, max_seconds: int | None) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise bad_request("timeout must be an integer number of seconds, or null for no expiry")
    seconds = int(value)
    if seconds < min_seconds:
        raise bad_request(f"timeout must be at least {min_seconds} seconds (or null for no expiry)")
    ceiling = min(MAX_SANDBOX_TIMEOUT_SECONDS, max_seconds or MAX_SANDBOX_TIMEOUT_SECONDS)
    if seconds > ceiling:
        raise bad_request(f"timeout must be at most {ceiling} seconds (or null for no expiry)")
    return seconds


def _parse_entrypoint(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise bad_request("entrypoint must be a non-empty array of strings")
    if not value[0]:
        raise bad_request("entrypoint[0] (the program) must not be empty")
    return list(value)


def _parse_platform(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    spec = _expect_dict(value, "platform")
    os_name, arch = spec.get("os"), spec.get("arch")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise bad_request("platform needs both 'os' and 'arch'")
    if os_name != "linux":
        raise bad_request(f"platform.os {os_name!r} cannot be satisfied: this runtime runs Linux sandboxes")
    host_arch = _HOST_ARCH.get(host_platform.machine().lower(), host_platform.machine())
    if arch != host_arch:
        raise bad_request(f"platform.arch {arch!r} cannot be satisfied: this host is {host_arch}")
    return {"os": os_name, "arch": arch}


#: Kubernetes' name for a container's writable-layer limit, and the short alias osbox accepts.
DISK_KEYS = ("ephemeral-storage", "disk")


def _parse_resources(value: Any) -> tuple[float | None, int | None, int | None]:
    """(cpu cores, memory bytes, disk bytes), each None when not given: the server's defaults
    apply later (in `SandboxManager.create`, after a snapshot restore has filled in its own)."""
    limits = _string_map(value, "resourceLimits")
    gpu = limits.get("gpu", "").strip()
    if gpu not in ("", "0"):
        raise bad_request("resourceLimits.gpu: the local runtime has no GPU support")
    cpu = parse_cpu(limits["cpu"]) if "cpu" in limits else None
    memory = parse_memory(limits["memory"]) if "memory" in limits else None
    given = [key for key in DISK_KEYS if key in limits]
    if len(given) > 1:
        raise bad_request("resourceLimits: give 'ephemeral-storage' or its alias 'disk', not both")
    disk = _parse_quantity(limits[given[0]], given[0]) if given else None
    return cpu, memory, disk


def _parse_quantity(text: str, key: str) -> int:
    """A byte quantity under `resourceLimits[key]`, parsed (and bounded) like memory."""
    try:
        return parse_memory(text)
    except ApiError as exc:  # the same rules, but the message must name the key that was given
        raise bad_request(exc.message.replace("resourceLimits.memory", f"resourceLimits.{key}")) from None


def _parse_env(value: Any) -> dict[str, str]:
    env = _string_map(value, "env")
    for key, item in env.items():
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise bad_request(f"env key {key!r} is not a valid environment variable name")
    return env


def _relative_subpath(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.startswith("/") or ".." in PurePosixPath(value).parts:
        raise bad_request(f"{where}.subPath must be a relative path without '..'")
    return value


def _overlaps(path: Path, *, data_dir: Path) -> bool:
    """Whether `path` contains the data dir (its keys, database, other sandboxes) or lies inside it."""
    real, data = Path(os.path.realpath(path)), Path(os.path.realpath(data_dir))
    return real == data or real in data.parents or data in real.parents


def _parse_volume(index: int, value: Any, volumes_dir: Path) -> dict[str, Any]:
    where = f"volumes[{index}]"
    volume = _expect_dict(value, where)
    name, mount_path = volume.get("name"), volume.get("mountPath")
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        raise bad_request(f"{where}.name must be a DNS label (lowercase letters, digits, '-')")
    if not isinstance(mount_path, str) or not mount_path.startswith("/") or mount_path.rstrip("/") == "":
        raise bad_request(f"{where}.mountPath must be an absolute path other than '/'")
    read_only = volume.get("readOnly", False)
    if not isinstance(read_only, bool):
        raise bad_request(f"{where}.readOnly must be a boolean")
    sub_path = _relative_subpath(volume.get("subPath"), where)
    backends = [key for key in ("host", "pvc", "ossfs") if volume.get(key) is not None]
    unknown = sorted(set(volume) - {"name", "mountPath", "readOnly", "subPath", "host", "pvc", "ossfs"})
    if unknown:
        raise bad_request(f"{where}: unsupported volume backend or field {unknown[0]!r}")
    if len(backends) != 1:
        raise bad_request(f"{where} must name exactly one backend: 'host' or 'pvc'")
    backend = backends[0]
    if backend == "ossfs":
        raise bad_request(
            f"{where}: 'ossfs' volumes are not supported by the local runtime; use 'host' or 'pvc'"
        )
    create = False
    if backend == "host":
        host = _expect_dict(volume["host"], f"{where}.host")
        path = host.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise bad_request(f"{where}.host.path must be an absolute host path")
        root, relative = Path(path), sub_path or ""
        if not root.exists():
            raise bad_request(f"{where}: host path {path!r} does not exist")
    else:
        pvc = _expect_dict(volume["pvc"], f"{where}.pvc")
        claim = pvc.get("claimName")
        if not isinstance(claim, str) or len(claim) > 253 or not _DNS_LABEL.match(claim):
            raise bad_request(f"{where}.pvc.claimName must be a DNS label")
        root, relative = volumes_dir, claim if sub_path is None else f"{claim}/{sub_path}"
        create = pvc.get("createIfNotExists", True) is not False
    _check_beneath(where, root, relative, backend, must_exist=not create)
    source = root / relative if relative else root
    if backend == "host" and _overlaps(source, data_dir=volumes_dir.parent):
        raise bad_request(f"{where}: host path {str(source)!r} holds or is inside the server's data dir")
    return {
        "name": name,
        "host_path": str(source),
        "sandbox_path": mount_path.rstrip("/"),
        "read_only": read_only,
        "create": create,
        # The trusted directory `host_path` is reached from without following symlinks: the tree
        # below it is writable by sandboxes (checked here, and again by the mount itself).
        "beneath": str(root) if relative else None,
    }


def _check_beneath(where: str, root: Path, relative: str, backend: str, *, must_exist: bool) -> None:
    """400 when `relative` below `root` passes through a symlink or a non-directory, or (with
    `must_exist`) is missing. Only a friendly early answer: the mount is confined again."""
    flags = os.O_PATH | (os.O_DIRECTORY if backend == "pvc" else 0)  # a host volume may be a file
    try:
        os.close(open_under(root, relative, flags))
    except FileNotFoundError:
        if must_exist and backend == "pvc":
            claim, _, sub_path = relative.partition("/")
            missing = f"subPath {sub_path!r} of volume {claim!r}" if sub_path else f"volume {claim!r}"
            raise bad_request(f"{where}.pvc: {missing} does not exist (createIfNotExists is false)") from None
        if must_exist:
            raise bad_request(f"{where}: host path {str(root / relative)!r} does not exist") from None
    except OSError as exc:
        if is_symlink_refusal(exc):
            raise bad_request(
                f"{where}: {relative!r} passes through a symlink, which is refused: subPath is "
                "resolved inside its volume without following symlinks"
            ) from None
        raise bad_request(f"{where}: cannot use {relative!r}: {os.strerror(exc.errno or 0)}") from None


def _parse_volumes(value: Any, volumes_dir: Path) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("volumes must be an array")
    mounts = [_parse_volume(i, item, volumes_dir) for i, item in enumerate(value)]
    for attribute, label in (("name", "name"), ("sandbox_path", "mountPath")):
        seen = [m[attribute] for m in mounts]
        duplicates = {x for x in seen if seen.count(x) > 1}
        if duplicates:
            raise bad_request(f"volumes: duplicate {label} {sorted(duplicates)[0]!r}")
    return mounts


def _parse_extensions(value: Any) -> dict[str, str]:
    extensions = _string_map(value, "extensions")
    renew = extensions.get(_RENEW_EXTENSION)
    if renew is not None and not (_DIGITS.fullmatch(renew) and 300 <= int(renew) <= 86400):
        raise bad_request(f"extensions.{_RENEW_EXTENSION} must be an integer from 300 to 86400")
    return extensions


def parse_create_request(
    body: Any,
    *,
    min_timeout: int,
    max_timeout: int | None,
    volumes_dir: Path,
    network_mode: NetworkMode = "none",
) -> CreateParams:
    """Check a `CreateSandboxRequest` body; raises a 400 ApiError on the first problem found.
    `network_mode` is the server's switch (a `networkPolicy` is checked against it)."""
    request = _expect_dict(body, "request body")
    image, snapshot_id = request.get("image"), request.get("snapshotId")
    if (image is None) == (snapshot_id is None):
        raise bad_request("exactly one of 'image' and 'snapshotId' must be given")
    image_spec: dict[str, str] | None = None
    image_auth: Credentials | None = None
    if image is not None:
        image_spec, image_auth = _parse_image(image)
    if snapshot_id is not None and (not isinstance(snapshot_id, str) or not snapshot_id):
        raise bad_request("snapshotId must be a non-empty string")
    # No entrypoint: the image's Entrypoint and Cmd, as a container engine runs it.
    entrypoint = _parse_entrypoint(request.get("entrypoint"))
    cpu, memory, disk = _parse_resources(request.get("resourceLimits"))
    extras = {
        key: request[key]
        for key in ("networkPolicy", "credentialProxy", "secureAccess", "volumes")
        if request.get(key) is not None
    }
    for key, kind in (("networkPolicy", dict), ("credentialProxy", dict), ("secureAccess", bool)):
        if key in extras and not isinstance(extras[key], kind):
            raise bad_request(f"{key} has the wrong type")
    extensions = _parse_extensions(request.get("extensions"))
    try:  # checked here for a 400; the backend sets the network up
        network_choice(
            network_mode,
            extras.get("networkPolicy"),
            extensions.get(NETWORK_EXTENSION),
            extras.get("credentialProxy"),
        )
    except PolicyError as exc:
        raise bad_request(str(exc)) from None
    return CreateParams(
        image=image_spec,
        snapshot_id=snapshot_id,
        entrypoint=entrypoint,
        timeout_seconds=_parse_timeout(request.get("timeout"), min_timeout, max_timeout),
        cpu_cores=cpu,
        memory_bytes=memory,
        env=_parse_env(request.get("env")),
        metadata=validate_metadata(request.get("metadata")),
        platform=_parse_platform(request.get("platform")),
        mounts=_parse_volumes(request.get("volumes"), volumes_dir),
        extensions=extensions,
        extras=extras,
        disk_bytes=disk,
        image_auth=image_auth,
    )


def _parse_image(image: Any) -> tuple[dict[str, str], Credentials | None]:
    """`{"uri", "auth"?}` -> ({"uri": canonical name}, credentials); 400 for a bad reference."""
    fields = _expect_dict(image, "image")
    uri = fields.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise bad_request("image.uri must be a non-empty string")
    try:
        parse_reference(uri.strip())
    except InvalidReference as exc:
        raise bad_request(f"image.uri: {exc}") from None
    auth = fields.get("auth")
    if auth is None:
        return {"uri": uri.strip()}, None
    auth = _expect_dict(auth, "image.auth")
    username, password = auth.get("username"), auth.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise bad_request("image.auth needs a non-empty 'username' and a 'password' string")
    return {"uri": uri.strip()}, Credentials(username, password)
