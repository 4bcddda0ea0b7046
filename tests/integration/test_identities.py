"""Who commands run as: per-command uid/gid from the sandbox's own range of host ids (server is
root), the single-id set-up otherwise, and what neither lets a command do.

Real sandboxes throughout; tests of the range need root and skip, saying so, without it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from osbox.server._backend import SandboxSpec
from osbox.server._backend.base import SandboxOSError
from osbox.server._backend.bwrap.backend import BwrapBackend, BwrapSandbox
from osbox.server._backend.bwrap.idranges import ID_LIMIT, REGISTRY_DIR, UID_BASE, IdRangeRegistry
from osbox.server._backend.bwrap.procs import start_time
from tests.integration.conftest import MakeSandbox
from tests.integration.execd_fixtures import Execd
from tests.integration.test_backend import host_uid_of, run

pytestmark = [pytest.mark.timeout(60)]
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes get a range of ids only when root")

#: Prints what a process is and may do: ids, groups, capabilities, no_new_privs.
_WHO = "id -u; id -g; id -G; grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs):' /proc/self/status"


def _who(out: str) -> tuple[str, str, str, dict[str, str]]:
    uid, gid, groups, *status = out.splitlines()
    return uid, gid, groups, dict(line.split(":\t") for line in status)


_NOTHING = {"CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapAmb": "0" * 16, "NoNewPrivs": "1"}


@requires_root
async def test_commands_run_as_any_mapped_uid_and_gid(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    assert sandbox.ids is not None and sandbox.ids_mapped
    cases: list[tuple[dict[str, Any], tuple[str, str, str]]] = [
        ({}, ("1000", "1000", "1000")),
        ({"uid": 0}, ("0", "0", "0")),
        ({"uid": 1001}, ("1001", "1001", "1001")),
        ({"uid": 1001, "gid": 1000}, ("1001", "1000", "1000")),
        ({"uid": 65535, "gid": 0}, ("65535", "0", "0")),
    ]
    for options, expected in cases:
        code, out, err = await run(sandbox, ["sh", "-c", _WHO], **options)
        uid, gid, groups, status = _who(out)
        assert (code, (uid, gid, groups)) == (0, expected), (options, err)
        assert status == _NOTHING, options  # no command keeps any of the agent's capabilities
    # Outside, sandbox uid N is host uid base + N: never host root, never another range.
    process = await sandbox.spawn(["sleep", "60"], env={}, cwd="/", uid=0)
    try:
        assert host_uid_of(process.pid) == sandbox.ids.base >= UID_BASE
    finally:
        process.signal_group(signal.SIGKILL)
        await process.wait()


@requires_root
async def test_ids_outside_the_range_are_refused(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    ids_cases: list[dict[str, int | None]] = [{"uid": 65536}, {"uid": 0, "gid": 70000}, {"uid": -1}]
    for options in ids_cases:
        with pytest.raises(ValueError, match="does not exist in this sandbox"):
            await sandbox.spawn(["true"], env={}, cwd="/", uid=options.get("uid"), gid=options.get("gid"))
    with pytest.raises(ValueError, match="must be an integer"):
        await sandbox.spawn(["true"], env={}, cwd="/", uid="0")  # type: ignore[arg-type]
    assert (await run(sandbox, ["true"]))[0] == 0  # the agent is fine


@requires_root
async def test_sandbox_root_is_powerless_outside_its_own_files(
    new_sandbox: MakeSandbox, backend_data_dir: Path
) -> None:
    other = await new_sandbox()
    sandbox = await new_sandbox()
    assert (await run(other, ["sh", "-c", "echo secret > /workspace/secret; chmod 666 /workspace/secret"]))[
        0
    ] == 0
    for path in ("/usr/osbox-test", "/etc/osbox-test", "/osbox-test"):
        assert (await run(sandbox, ["touch", path], uid=0, gid=0))[0] != 0, path
    code, _, err = await run(sandbox, ["cat", "/etc/shadow"], uid=0, gid=0)
    assert code != 0 and "Permission denied" in err
    assert await run(sandbox, ["ls", "-A", str(backend_data_dir)], uid=0, gid=0) == (0, "", "")
    code, _, _ = await run(
        sandbox, ["cat", str(other.spec.state_dir / "fs" / "workspace" / "secret")], uid=0, gid=0
    )
    assert code != 0
    # No way back to privilege: not by setuid, not through PID 1 (the agent).
    escape = "import os\ntry:\n    os.setuid(1000)\nexcept PermissionError:\n    print('refused')"
    assert await run(sandbox, ["python3", "-S", "-c", escape], uid=1001) == (0, "refused\n", "")
    code, _, err = await run(sandbox, ["cat", "/proc/1/environ"])  # same uid, but it holds capabilities
    assert code != 0 and "Permission denied" in err
    await run(sandbox, ["kill", "-KILL", "1"])  # PID 1 of its namespace: not killable from inside
    assert (await run(sandbox, ["true"]))[0] == 0
    code, _, err = await run(sandbox, ["chown", "1001", "/workspace"], uid=0, gid=0)
    assert code != 0 and "not permitted" in err  # root inside, but without CAP_CHOWN


@requires_root
async def test_chown_to_mapped_owners(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    assert (await run(sandbox, ["sh", "-c", "echo x > /workspace/f"]))[0] == 0
    await sandbox.call(
        "set_permissions", items={"/workspace/f": {"mode": 640, "owner": "root", "group": "1001"}}
    )
    info = (await sandbox.call("stat", paths=["/workspace/f"]))["/workspace/f"]
    assert (info["owner"], info["group"]) == ("root", "1001")
    assert sandbox.ids is not None
    host = os.stat(sandbox.spec.state_dir / "fs" / "workspace" / "f")
    assert (host.st_uid, host.st_gid) == (sandbox.ids.base, sandbox.ids.base + 1001)
    # The file API still reaches it (the agent's own access is not limited by its new owner).
    await sandbox.call("set_permissions", items={"/workspace/f": {"mode": 600}})
    with pytest.raises(ValueError, match="uid 70000 does not exist"):
        await sandbox.call("set_permissions", items={"/workspace/f": {"mode": 600, "owner": "70000"}})
    assert await run(sandbox, ["cat", "/workspace/f"], uid=1001) == (
        1,
        "",
        "cat: /workspace/f: Permission denied\n",
    )


async def test_passwd_and_group_list_the_sandbox_users(new_sandbox: MakeSandbox) -> None:
    sandbox = await new_sandbox()
    code, out, _ = await run(
        sandbox, ["sh", "-c", "getent passwd | cut -d: -f1,3; getent group | cut -d: -f1,3"]
    )
    assert code == 0
    assert out.split() == [
        "root:0",
        "sandbox:1000",
        "nobody:65534",
        "root:0",
        "sandbox:1000",
        "nogroup:65534",
    ]


@requires_root
async def test_ranges_are_disjoint_recorded_and_released(backend_data_dir: Path) -> None:
    backend = BwrapBackend(backend_data_dir)
    second = BwrapBackend(backend_data_dir)  # as after a restart
    handles: list[BwrapSandbox] = []
    try:
        for name in ("a", "b"):
            spec = SandboxSpec(name, ["sleep", "60"], backend_data_dir / "sandboxes" / name)
            handles.append(await backend.create(spec))
        first, other = (handle.ids for handle in handles)
        assert first is not None and other is not None
        assert first.base + first.size <= other.base or other.base + other.size <= first.base
        assert all(ids.base >= UID_BASE and ids.base + ids.size <= ID_LIMIT for ids in (first, other))
        record = json.loads((REGISTRY_DIR / str(first.slot)).read_text())
        assert [handles[0].agent_pid, start_time(handles[0].agent_pid)] in record["holders"]
        adopted = await second.adopt(handles[0].spec)  # a new server adopts: the range stays
        assert adopted is not None and adopted.ids == first and adopted.ids_mapped
        assert (await run(adopted, ["id", "-u"], uid=1001))[1] == "1001\n"
        await second.destroy(adopted)
        assert not (REGISTRY_DIR / str(first.slot)).exists()  # released
        assert (REGISTRY_DIR / str(other.slot)).exists()
    finally:
        for handle in handles:
            await backend.destroy(handle)
        await backend.close()
        await second.close()
    assert not any((REGISTRY_DIR / str(handle.ids.slot)).exists() for handle in handles if handle.ids)


@requires_root
async def test_a_dead_servers_ranges_are_reclaimed(tmp_path: Path) -> None:
    registry = IdRangeRegistry(tmp_path / "registry")
    taken = registry.reserve()
    (tmp_path / "registry" / str(taken.slot)).write_text(json.dumps({"holders": [[os.getpid(), 1]]}))
    registry.sweep()  # a holder whose start time differs is another (dead) process
    assert not (tmp_path / "registry" / str(taken.slot)).exists()
    kept = registry.reserve()
    registry.sweep()
    assert (tmp_path / "registry" / str(kept.slot)).exists()  # held by this live process
    registry.release(kept)
    assert not (tmp_path / "registry" / str(kept.slot)).exists()


@pytest.fixture
async def single_id_backend(backend_data_dir: Path) -> AsyncIterator[BwrapBackend]:
    """A backend whose sandboxes get one id only, as when not root (or the kernel refuses maps)."""
    backend = BwrapBackend(backend_data_dir)
    backend._single_id_reason = backend._single_id_reason or "forced by the test"
    backend._describe()
    try:
        yield backend
    finally:
        await backend.close()


async def test_one_id_only_refuses_others_clearly(
    single_id_backend: BwrapBackend, backend_data_dir: Path
) -> None:
    assert "every command runs as uid/gid 1000" in single_id_backend.description
    spec = SandboxSpec("single", ["sleep", "60"], backend_data_dir / "sandboxes" / "single")
    sandbox = await single_id_backend.create(spec)
    try:
        assert not sandbox.ids_mapped
        code, out, _ = await run(sandbox, ["sh", "-c", _WHO])
        assert (code, _who(out)[:3], _who(out)[3]) == (0, ("1000", "1000", "1000"), _NOTHING)
        with pytest.raises(ValueError, match="only uid 1000 is mapped"):
            await sandbox.spawn(["true"], env={}, cwd="/", uid=0)
        with pytest.raises(ValueError, match="only gid 1000 is mapped"):
            await sandbox.spawn(["true"], env={}, cwd="/", uid=1000, gid=0)
        with pytest.raises(ValueError, match="only uid 1000 is mapped"):
            await sandbox.call("set_permissions", items={"/workspace": {"mode": 755, "owner": "root"}})
        with pytest.raises(SandboxOSError):
            await sandbox.call("stat", paths=["/workspace/missing"])
    finally:
        await single_id_backend.destroy(sandbox)


async def test_command_and_file_apis_take_ids(execd: Execd) -> None:
    refused = await execd.client.post("/command", json={"command": "id -u", "uid": 70000})
    assert refused.status_code == 400 and "does not exist" in refused.json()["message"]
    chown = {"/workspace": {"mode": 755, "owner": "70000"}}
    refused = await execd.client.post("/files/permissions", json=chown)
    assert refused.status_code == 400 and "does not exist" in refused.json()["message"]
    if not getattr(execd.handle, "ids_mapped", False):
        return  # one id only: the 400s above are all there is
    events = await execd.run("id -u; id -g", uid=0)
    assert [e["text"] for e in events if e["type"] == "stdout"] == ["0", "0"]
    events = await execd.run("id -u; id -g", uid=1001, gid=1002)
    assert [e["text"] for e in events if e["type"] == "stdout"] == ["1001", "1002"]
    metadata = json.dumps({"path": "/workspace/owned", "owner": "root", "group": "1001", "mode": 640})
    files = [
        ("metadata", ("m", metadata.encode(), "application/json")),
        ("file", ("f", b"x", "application/octet-stream")),
    ]
    assert (await execd.client.post("/files/upload", files=files)).status_code == 200
    info = (await execd.client.get("/files/info", params={"path": "/workspace/owned"})).json()[
        "/workspace/owned"
    ]
    assert (info["owner"], info["group"], info["mode"]) == ("root", "1001", 640)
    download = await execd.client.get("/files/download", params={"path": "/workspace/owned"})
    assert download.status_code == 200 and download.content == b"x"  # the API still reaches it
