"""Resource limits of `osbox serve` sandboxes, end to end: the disk quota (a write past it gets
ENOSPC inside, nothing else is affected, nothing is left after delete), the server's defaults
for a create without limits, and tmpfs mounts sized within the memory limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox import Sandbox
from osbox.server import LocalServer
from osbox.server._backend import remove_tree
from tests.polling import wait_until

from .server_fixtures import API_KEY, lifecycle_client, requires_runtime
from .test_lifecycle_restart import kill_tree, sandbox_processes

pytestmark = [requires_runtime, pytest.mark.timeout(180)]

_MiB = 2**20


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as local:
        yield local


def _sandbox(server: LocalServer, **limits: str) -> Sandbox:
    return Sandbox.create(
        base_url=server.base_url + "/v1", api_key=API_KEY, resource_limits=limits or None, lifetime=300
    )


def _needs_disk_quota(server: LocalServer, sandbox: Sandbox) -> None:
    with lifecycle_client(server) as api:
        message = api.get(f"/sandboxes/{sandbox.id}").json()["status"]["message"]
    if "disk quota (ephemeral-storage) is not enforced" in message:
        pytest.skip(message)


def loop_devices_backed_by(directory: Path) -> list[str]:
    """Loop devices whose backing file is (or was, before its deletion) under `directory`."""
    found = []
    for device in Path("/sys/block").glob("loop*"):
        try:
            backing = (device / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue  # not set up
        if backing.startswith(f"{directory}/"):
            found.append(device.name)
    return found


def mounts_under(directory: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if line.split()[4].startswith(f"{directory}/")]


def test_a_write_past_the_disk_quota_gets_enospc_inside_and_nothing_else_is_affected(
    server: LocalServer,
) -> None:
    quota = {"ephemeral-storage": "64Mi"}
    with _sandbox(server, memory="512Mi", **quota) as small, _sandbox(server) as other:
        _needs_disk_quota(server, small)
        for path in ("/workspace/big", "/tmp/big", "/home/sandbox/big"):
            filled = small.run(f"head -c 100M /dev/zero > {path}")
            assert filled.exit_code != 0, f"writing 100 MiB to {path} past a 64 MiB quota succeeded"
            assert "No space left on device" in filled.stderr
            small.run(f"rm -f {path}")
        # The other sandbox (the default quota) and the host are unaffected.
        assert other.run("head -c 100M /dev/zero > /workspace/big && echo written").stdout == "written\n"
        image = server.data_dir / "sandboxes" / small.id / "disk.img"
        assert os.stat(image).st_blocks * 512 <= 64 * _MiB  # what it took from the host's disk
        assert small.run("echo still running").stdout == "still running\n"
        with lifecycle_client(server) as api:
            sandbox = api.get(f"/sandboxes/{small.id}").json()
        assert sandbox["resourceLimits"]["ephemeral-storage"] == "64Mi"
        assert "ephemeral-storage 64Mi" in sandbox["status"]["message"]


def test_no_mount_or_loop_device_is_left_after_delete(server: LocalServer) -> None:
    with _sandbox(server, disk="32Mi") as sandbox:  # the short alias of "ephemeral-storage"
        _needs_disk_quota(server, sandbox)
        with lifecycle_client(server) as api:
            assert api.get(f"/sandboxes/{sandbox.id}").json()["resourceLimits"]["ephemeral-storage"] == "32Mi"
        state_dir = server.data_dir / "sandboxes" / sandbox.id
        assert mounts_under(state_dir), "the sandbox's disk is not mounted in its state dir"
        assert loop_devices_backed_by(state_dir)
    # Leaving the block deleted it. The loop device is released asynchronously by the kernel.
    wait_until(lambda: not mounts_under(state_dir), what="the disk's mount to go")
    wait_until(lambda: not loop_devices_backed_by(state_dir), what="the loop device to go")
    assert not state_dir.exists()


def test_a_disk_quota_above_the_servers_maximum_is_a_400(server: LocalServer) -> None:
    with lifecycle_client(server) as api:
        body = {
            "image": {"uri": "python:3.11"},
            "entrypoint": ["tail", "-f", "/dev/null"],
            "resourceLimits": {"ephemeral-storage": "1Pi"},
        }
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 400, response.text
        assert "ephemeral-storage" in response.json()["message"]
        body["resourceLimits"] = {"ephemeral-storage": "lots"}
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 400
        assert "resourceLimits.ephemeral-storage 'lots'" in response.json()["message"]
        body["resourceLimits"] = {"ephemeral-storage": "1Gi", "disk": "2Gi"}
        assert api.post("/sandboxes", json=body).status_code == 400


def test_a_create_without_limits_gets_the_servers_defaults_applied_and_shown(server: LocalServer) -> None:
    with _sandbox(server) as sandbox:
        state_dir = server.data_dir / "sandboxes" / sandbox.id
        if not mounts_under(state_dir):  # a pre-started sandbox's disk moved here with its state dir
            _needs_disk_quota(server, sandbox)
            raise AssertionError("the sandbox's disk is not mounted in its state dir")
        with lifecycle_client(server) as api:
            body = api.get(f"/sandboxes/{sandbox.id}").json()
        defaults = {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi", "pids": "512"}
        assert body["resourceLimits"] == defaults
        assert "memory 2Gi" in body["status"]["message"]
        if "Resource limits are not enforced" in body["status"]["message"]:
            pytest.skip(body["status"]["message"])
        limit = sandbox.run(
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
        )
        assert limit.stdout.strip() == str(2 * 2**30)
    wait_until(lambda: not loop_devices_backed_by(state_dir), what="the loop device to go")
    assert not mounts_under(state_dir)


def test_filling_a_tmpfs_in_a_small_sandbox_gets_enospc_and_the_sandbox_keeps_running(
    server: LocalServer,
) -> None:
    with _sandbox(server, memory="256Mi") as sandbox:
        filled = sandbox.run("head -c 300M /dev/zero > /dev/shm/fill")
        assert "No space left on device" in filled.stderr
        # /dev itself (a tmpfs bwrap cannot size) is read-only: its writable part is /dev/shm.
        assert "Read-only file system" in sandbox.run("head -c 1M /dev/zero > /dev/fill", uid=0).stderr
        assert sandbox.run("echo alive").stdout == "alive\n"
        size = sandbox.run("df -k --output=size /dev/shm | tail -n +2").stdout
        assert int(size) * 1024 <= 64 * _MiB, f"/dev/shm is a {size.strip()} KiB tmpfs in a 256 MiB sandbox"
        # The rest of what it writes (/run and /home of its image included) is on its disk, not in memory.
        for directory in ("/run", "/home"):
            target = sandbox.run(f"df -k --output=fstype {directory} | tail -n +2", uid=0).stdout.strip()
            assert target == "overlay", (directory, target)
        with lifecycle_client(server) as api:
            assert api.get(f"/sandboxes/{sandbox.id}").json()["status"]["state"] == "Running"


def test_many_small_processes_running_out_of_memory_do_not_take_the_agent_with_them(
    server: LocalServer,
) -> None:
    with _sandbox(server, memory="128Mi") as sandbox:
        # 40 shells of ~8 MiB each, every one smaller than the agent: without a raised score for
        # the workload (or a protected agent), the OOM killer would pick the agent, ending the sandbox.
        hold = "x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 3"
        with lifecycle_client(server) as api:
            if (
                "Resource limits are not enforced"
                in api.get(f"/sandboxes/{sandbox.id}").json()["status"]["message"]
            ):
                pytest.skip("memory limits are not enforced here")
            sandbox.run(f"for i in $(seq 40); do ( {hold} ) & done; wait", timeout=60)
            assert api.get(f"/sandboxes/{sandbox.id}").json()["status"]["state"] == "Running"
        assert sandbox.run("echo alive").stdout == "alive\n"


def test_a_sandbox_that_dies_after_running_out_of_memory_is_reported_so(server: LocalServer) -> None:
    with _sandbox(server, memory="128Mi") as sandbox:
        hog = sandbox.run("python3 -S -c \"x = b'x' * (1 << 30)\"")
        if hog.exit_code == 0:
            pytest.skip("memory limits are not enforced here")
        # Whatever ends its PID 1 next (here: a kill from outside), the status says what happened.
        record = json.loads((server.data_dir / "sandboxes" / sandbox.id / "run" / "agent.json").read_text())
        os.kill(record["agent_pid"], signal.SIGKILL)
        with lifecycle_client(server) as api:

            def failed() -> dict[str, str] | None:
                status: dict[str, str] = api.get(f"/sandboxes/{sandbox.id}").json()["status"]
                return status if status["state"] == "Failed" else None

            status = wait_until(failed, what="the sandbox to be reported Failed")
        assert status["reason"] == "oom_killed", status
        assert "ran out of memory (128Mi)" in status["message"]
        assert "OOM killer killed 1 of its processes" in status["message"]


def test_a_dead_sandboxs_disk_is_mounted_again_after_a_reboot_and_goes_with_it(reachable_dir: Path) -> None:
    data_dir = reachable_dir / "data"
    body = {
        "image": {"uri": "python:3.11"},
        "entrypoint": ["sleep", "1000"],
        "resourceLimits": {"ephemeral-storage": "32Mi"},
    }
    with (
        LocalServer(data_dir=data_dir, api_key="k", destroy_on_shutdown=False, warm_pool_size=0) as first,
        lifecycle_client(first, api_key="k") as api,
    ):
        created = api.post("/sandboxes", json=body).json()
    sandbox_id, state_dir = created["id"], data_dir / "sandboxes" / created["id"]
    try:
        if "disk quota (ephemeral-storage) is not enforced" in created["status"]["message"]:
            pytest.skip(created["status"]["message"])
        (state_dir / "fs" / "workspace" / "kept").write_text("written before the reboot")
        # A reboot: the sandbox's processes end, its disk is unmounted, its loop device goes.
        kill_tree(sandbox_processes(data_dir, sandbox_id))
        subprocess.run(["umount", str(state_dir / "fs")], check=True)
        wait_until(lambda: not loop_devices_backed_by(state_dir), what="the loop device to go")

        with (
            LocalServer(data_dir=data_dir, api_key="k", warm_pool_size=0) as second,
            lifecycle_client(second, api_key="k") as api,
        ):
            assert api.get(f"/sandboxes/{sandbox_id}").json()["status"]["state"] == "Failed"
            assert (state_dir / "fs" / "workspace" / "kept").read_text() == "written before the reboot"
            assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            assert not mounts_under(state_dir)
            wait_until(lambda: not loop_devices_backed_by(state_dir), what="the loop device to go")
    finally:
        remove_tree(reachable_dir)


def test_a_snapshot_is_restored_onto_the_new_sandboxs_disk_or_refused_when_too_big(
    server: LocalServer,
) -> None:
    with _sandbox(server, **{"ephemeral-storage": "64Mi"}) as source, lifecycle_client(server) as api:
        _needs_disk_quota(server, source)
        assert source.run("head -c 40M /dev/urandom > /workspace/data && echo ok").stdout == "ok\n"
        snapshot_id = api.post(f"/sandboxes/{source.id}/snapshots", json={}).json()["id"]
        wait_until(
            lambda: api.get(f"/snapshots/{snapshot_id}").json()["status"]["state"] == "Ready",
            what="the snapshot to be Ready",
        )
        try:
            restored_ids = []
            for quota, state in (("64Mi", "Running"), ("16Mi", "Failed")):
                body = {"snapshotId": snapshot_id, "resourceLimits": {"ephemeral-storage": quota}}
                restored = api.post("/sandboxes", json=body).json()
                restored_ids.append(restored["id"])
                assert restored["status"]["state"] == state, restored["status"]
            state_dir = server.data_dir / "sandboxes" / restored_ids[0]
            assert (state_dir / "fs" / "upper" / "workspace" / "data").stat().st_size == 40 * _MiB
            assert mounts_under(state_dir)
            refused = api.get(f"/sandboxes/{restored_ids[1]}").json()["status"]
            assert "do not fit on its disk" in refused["message"]
        finally:
            for sandbox_id in restored_ids:
                api.delete(f"/sandboxes/{sandbox_id}")
            api.delete(f"/snapshots/{snapshot_id}")
