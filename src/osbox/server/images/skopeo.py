"""Running `skopeo copy`: credentials through a private authfile, a timeout, errors mapped to types.

skopeo (Debian's, containers/image underneath) speaks the registry protocol: token and basic auth,
schema 2 and OCI manifests, multi-arch indexes, gzip and zstd layers, blob digest verification. We
give it a source (`docker://…`, `docker-archive:…`, `oci-archive:…`) and our OCI layout as the
destination, and turn its one-line fatal messages into the store's exception types.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .errors import (
    ArchiveError,
    AuthenticationFailed,
    ImageError,
    ImageNotFound,
    PlatformNotFound,
    PullTimeout,
    RegistryUnreachable,
)
from .platform import Platform

__all__ = ["Credentials", "copy_image", "is_loopback_registry"]

#: Extra seconds the process gets beyond skopeo's own `--command-timeout` before it is killed.
_KILL_GRACE_SECONDS = 10


@dataclass(frozen=True)
class Credentials:
    """Registry credentials (`image.auth`). The password never appears in a repr."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def is_loopback_registry(registry: str) -> bool:
    """True for `localhost`, `127.x.x.x` and `[::1]` (any port): plain HTTP allowed, as Docker does."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _authfile(registry: str, credentials: Credentials | None) -> Iterator[list[str]]:
    """`--src-authfile PATH` for skopeo, in a 0700 temp dir removed on exit; none without credentials.

    Credentials go in a file, never on the command line (where `ps` and /proc show them). An empty
    authfile is passed when there are none, so that a host's ~/.docker/config.json is not used.
    """
    directory = tempfile.mkdtemp(prefix="osbox-auth-")
    try:
        path = os.path.join(directory, "auth.json")
        auths = {}
        if credentials is not None:
            token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
            auths[registry] = {"auth": token}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"auths": auths}, handle)
        yield ["--src-authfile", path]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def copy_image(
    source: str,
    destination: str,
    *,
    registry: str | None = None,
    credentials: Credentials | None = None,
    platform: Platform | None = None,
    timeout_seconds: float,
    what: str,
    on_progress: Callable[[str], None] | None = None,
) -> None:
    """`skopeo copy SOURCE DESTINATION`, raising the matching ImageError on failure.

    `registry` (for docker:// sources) selects the credentials' registry and plain HTTP for loopback
    registries. `what` names the image in error messages. `on_progress` gets skopeo's output lines
    ("Copying blob sha256:…") as they come.
    """
    command = ["skopeo", "copy", f"--command-timeout={int(timeout_seconds)}s"]
    if platform is not None:
        command += [f"--override-os={platform.os}", f"--override-arch={platform.architecture}"]
        if platform.variant:
            command.append(f"--override-variant={platform.variant}")
    if registry is not None and is_loopback_registry(registry):
        command.append("--src-tls-verify=false")
    with _authfile(registry or "", credentials) as auth_arguments:
        command += [*auth_arguments, source, destination]
        output = _run(command, timeout_seconds + _KILL_GRACE_SECONDS, what, on_progress)
    if output.returncode != 0:
        raise _error_from(output.stderr, what, registry, credentials is not None)


@dataclass
class _Output:
    returncode: int
    stderr: str


def _run(
    command: Sequence[str], timeout: float, what: str, on_progress: Callable[[str], None] | None
) -> _Output:
    """Run skopeo, its stdout lines to `on_progress` from a thread, killed after `timeout` seconds.

    stderr goes to a temp file, so a chatty skopeo can never block on a full pipe.
    """
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_progress else subprocess.DEVNULL,
            stderr=stderr_file,
            text=True,
        )
        reader = None
        if on_progress is not None and process.stdout is not None:
            stdout = process.stdout

            def forward() -> None:
                for line in stdout:
                    on_progress(line.rstrip("\n"))

            reader = threading.Thread(target=forward, name="skopeo-progress", daemon=True)
            reader.start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PullTimeout(f"{what}: no answer within {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if reader is not None:
                reader.join()
            if process.stdout is not None:
                process.stdout.close()
        stderr_file.seek(0)
        return _Output(process.returncode, stderr_file.read().decode(errors="replace"))


def _fatal_message(stderr: str) -> str:
    """skopeo's `level=fatal msg="…"` text (unquoted), or the last line of stderr."""
    match = re.search(r'level=fatal msg="((?:[^"\\]|\\.)*)"', stderr)
    if match:
        return match.group(1).replace('\\"', '"')
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "skopeo failed without a message"


def _error_from(stderr: str, what: str, registry: str | None, had_credentials: bool) -> ImageError:
    """The store's exception for one of skopeo's failure messages."""
    message = _fatal_message(stderr)
    lowered = message.lower()
    if registry is None:  # a local archive: whatever failed is about the file
        return ArchiveError(f"{what}: {message}")
    if "context deadline exceeded" in lowered or "timeout" in lowered:
        return PullTimeout(f"{what}: the registry {registry} did not answer in time ({message})")
    if "no image found in" in lowered and "for architecture" in lowered:
        detail = message.split(": ", 1)[-1]
        return PlatformNotFound(f"{what}: the image has no variant for this platform ({detail})")
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        if had_credentials:
            return AuthenticationFailed(f"{what}: the registry {registry} refused the credentials given")
        return AuthenticationFailed(
            f"{what}: the registry {registry} requires credentials (image.auth) and none were given"
        )
    if "manifest unknown" in lowered or "name unknown" in lowered or "not found" in lowered:
        return ImageNotFound(f"{what}: the registry {registry} has no such image or tag")
    unreachable_markers = ("pinging container registry", "dial tcp", "connection refused", "no such host")
    if any(marker in lowered for marker in unreachable_markers) or "tls" in lowered or "x509" in lowered:
        reason = message.rsplit(": ", 1)[-1]
        return RegistryUnreachable(f"{what}: the registry {registry} can't be reached ({reason})")
    return ImageError(f"{what}: {message}")
