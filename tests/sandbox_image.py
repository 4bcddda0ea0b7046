"""The image every test sandbox runs: Debian with python3 and ipykernel, served as `python:3.11`.

Tests create sandboxes from `python:3.11` as a user would from Docker Hub. For the whole session a
throw-away `docker-registry` on 127.0.0.1 serves the Debian image built by `mmdebstrap`
(`osbox.server.images.debian`, cached under ~/.cache/osbox-test-images), and every server the
tests start pulls Docker Hub names from it (`OSBOX_REGISTRY_MIRRORS`) into one image store shared
by the session's servers, kept between runs (`OSBOX_IMAGE_STORE`): the first run pulls and unpacks
the image once, later runs find it. No test reaches the internet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox.server.images.debian import debian_environment
from tests.integration.images.registry import tools_missing

CACHE_DIR = Path(os.environ.get("OSBOX_TEST_IMAGE_CACHE", Path.home() / ".cache" / "osbox-test-images"))
#: Processes that live for the whole session (the registry): not leaks of any one test.
SESSION_PROCESSES: set[int] = set()
#: The names tests create sandboxes from; each is the Debian image.
TEST_IMAGES = (
    "library/python:3.11",
    "library/python:latest",
    "library/debian:12",
    "opensandbox/code-interpreter:v1.1.1",
)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "sandboxes run images only when the server is root"
    missing = tools_missing()
    if missing is not None:
        return missing
    import shutil

    return None if shutil.which("mmdebstrap") else "mmdebstrap is not installed (make install)"


@pytest.fixture(scope="session", autouse=True)
def sandbox_image_registry() -> Iterator[str | None]:  # the mirror's host:port
    """The session's registry mirror of Docker Hub, with the test image under `TEST_IMAGES`."""
    if _unavailable() is not None:
        yield None
        return
    with debian_environment(CACHE_DIR, TEST_IMAGES) as registry:
        SESSION_PROCESSES.add(registry.pid)
        yield registry.host
