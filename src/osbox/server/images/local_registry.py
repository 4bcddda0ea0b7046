"""A throw-away local registry: Debian's `docker-registry` on 127.0.0.1, for the demo and the tests.

    with local_registry() as registry:                      # optionally (username, password)
        registry.push(layout, "debian-python", "library/python:3.11")
        # docker.io names resolve here with ServerConfig(registry_mirrors={"docker.io": registry.host})

It runs CNCF distribution 2.8 from a config in a temp dir (behind htpasswd basic auth when a
username is given), and `push` copies an OCI layout's image into it with `skopeo`, exactly as
`docker push` would. The registry and its storage are removed when the block ends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalRegistry", "local_registry"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRegistry:
    """A running `docker-registry` on 127.0.0.1; `host` is `127.0.0.1:PORT`."""

    host: str
    workdir: Path
    username: str | None = None
    password: str | None = None
    pid: int = 0  # the registry's process

    def ref(self, repository_and_tag: str) -> str:
        """A reference to an image in this registry, e.g. `ref("busybox:1")`."""
        return f"{self.host}/{repository_and_tag}"

    def push(
        self, layout: Path, ref_name: str, repository_and_tag: str, docker_schema2: bool = False
    ) -> None:
        """Push `layout:ref_name` (an image or an index: all of it) to this registry.

        As built (OCI manifests), or converted to Docker schema 2 manifests with `docker_schema2`.
        """
        command = ["skopeo", "copy", "-q", "--all", "--dest-tls-verify=false"]
        command += ["--format", "v2s2"] if docker_schema2 else ["--preserve-digests"]
        if self.username is not None:
            command += ["--dest-authfile", str(self._authfile())]
        command += [f"oci:{layout}:{ref_name}", f"docker://{self.ref(repository_and_tag)}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"skopeo push failed: {result.stderr.strip()}")

    def manifest_digest(self, repository_and_tag: str) -> str:
        """The digest the registry serves for a tag (of an image or an index)."""
        command = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
        if self.username is not None:
            command += ["--authfile", str(self._authfile())]
        command.append(f"docker://{self.ref(repository_and_tag)}")
        raw = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
        return f"sha256:{hashlib.sha256(raw).hexdigest()}"

    def _authfile(self) -> Path:
        path = self.workdir / "push-auth.json"
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def local_registry(username: str | None = None, password: str | None = None) -> Iterator[LocalRegistry]:
    """Run a registry (with htpasswd basic auth when a username is given) until the block exits."""
    workdir = Path(tempfile.mkdtemp(prefix="osbox-registry-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        auth = ""
        if username is not None:
            secret = (password or "").encode()  # on stdin, not the command line
            htpasswd = subprocess.run(
                ["htpasswd", "-niB", username], input=secret, capture_output=True, check=True
            ).stdout
            (workdir / "htpasswd").write_bytes(htpasswd)
            auth = f"auth:\n  htpasswd:\n    realm: osbox-test\n    path: {workdir / 'htpasswd'}\n"
        (workdir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + auth
        )
        log = (workdir / "registry.log").open("wb")
        process = subprocess.Popen(
            ["docker-registry", "serve", str(workdir / "config.yml")], stdout=log, stderr=log
        )
        _wait_until_serving(port, process, workdir / "registry.log")
        yield LocalRegistry(f"127.0.0.1:{port}", workdir, username, password, process.pid)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # 401: serving, behind auth
        except OSError:
            time.sleep(0.05)  # polling for readiness, bounded by the deadline
    raise RuntimeError("docker-registry did not start serving within 20 s")
