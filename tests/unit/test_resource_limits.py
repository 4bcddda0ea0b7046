"""Pure parts of sandbox resource limits: tmpfs sizes, the bwrap command line, the wire format."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbox.server._backend.bwrap import layout as lay
from osbox.server.lifecycle.errors import ApiError
from osbox.server.lifecycle.records import SandboxRecord, format_quantity
from osbox.server.lifecycle.validation import parse_create_request

_MiB = 2**20


def _argv(memory_bytes: int | None, *, hidden: list[str], mounts: list[str]) -> list[str]:
    fds = lay.BwrapFds(
        workspace=3, tmp=4, home=5, listen=6, log=7, info=8, agent_files={"main.py": 9},
        etc_files={"/etc/passwd": 10}, mounts=[(11 + i, path, False) for i, path in enumerate(mounts)],
    )  # fmt: skip
    return lay.bwrap_argv(
        bwrap="bwrap",
        python="python3",
        hostname="sandbox",
        fds=fds,
        entries=lay.root_entries(),
        hidden=hidden,
        cgroup_dirs=[Path("/sys/fs/cgroup/memory/osbox-x")],
        tmpfs=lay.tmpfs_sizes(memory_bytes),
    )


@pytest.mark.parametrize("memory_bytes", [None, 64 * _MiB, 256 * _MiB, 2**31])
def test_every_tmpfs_is_sized_and_the_writable_ones_fit_in_the_memory_limit(memory_bytes: int | None) -> None:
    argv = _argv(memory_bytes, hidden=["/var/lib/osbox"], mounts=["/usr/share/new-mount"])
    tmpfs_at = [i for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert len(tmpfs_at) == 6  # /dev/shm, /run, /home, the shadow /usr/share, the cover, /sys/fs/cgroup
    for i in tmpfs_at:
        sized = argv[i - 2] == "--size" or argv[i - 4] == "--size"  # "--size N [--perms M] --tmpfs"
        assert sized, f"tmpfs at {argv[i + 1]} has no size"
    assert argv[argv.index("--dev") + 1 : argv.index("--dev") + 9].count("--remount-ro") == 1  # /dev is ro
    sizes = lay.tmpfs_sizes(memory_bytes)
    writable = sizes.shm + sizes.run + sizes.cover  # /dev/shm, /run, /home
    assert writable <= (memory_bytes // 2 if memory_bytes is not None else 80 * _MiB)


def test_quantities_are_shown_in_the_largest_exact_binary_unit() -> None:
    assert [format_quantity(n) for n in (2**31, 64 * _MiB, 1536 * _MiB, 1000, 2**40)] == [
        "2Gi", "64Mi", "1536Mi", "1000", "1Ti"
    ]  # fmt: skip
    record = SandboxRecord(
        id="x", created_at="", state="Running", reason="", message="", last_transition_at="",
        entrypoint=["true"], cpu_cores=0.5, memory_bytes=2**31, pids_max=512, disk_bytes=10 * 2**30,
    )  # fmt: skip
    assert record.to_wire()["resourceLimits"] == {
        "cpu": "500m", "memory": "2Gi", "ephemeral-storage": "10Gi", "pids": "512"
    }  # fmt: skip


def _create(limits: dict[str, str]) -> int | None:
    body = {"image": {"uri": "x"}, "entrypoint": ["true"], "resourceLimits": limits}
    return parse_create_request(body, min_timeout=60, max_timeout=None, volumes_dir=Path("/v")).disk_bytes


def test_ephemeral_storage_and_its_alias_are_parsed_like_memory() -> None:
    assert _create({"ephemeral-storage": "64Mi"}) == 64 * _MiB
    assert _create({"disk": "1Gi"}) == 2**30
    assert _create({}) is None  # the server's default applies later
    with pytest.raises(ApiError, match=r"resourceLimits\.disk 'big'"):
        _create({"disk": "big"})
    with pytest.raises(ApiError, match="not both"):
        _create({"disk": "1Gi", "ephemeral-storage": "1Gi"})
