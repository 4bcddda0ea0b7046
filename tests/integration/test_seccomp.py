"""The seccomp filter in real sandboxes: no nested user namespaces, no kernel-attack syscalls, and
everything ordinary work needs still works.

Each behaviour is checked in the three ways a sandbox starts: with a range of ids (server is root),
with one id (bwrap maps it itself, as when the server is not root) and from the warm pool.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from osbox.server._backend import SandboxSpec
from osbox.server._backend.bwrap import backend as bwrap_module
from osbox.server._backend.bwrap import seccomp
from osbox.server._backend.bwrap.backend import BwrapBackend, BwrapSandbox
from tests.integration.conftest import requires_bwrap
from tests.integration.execd_fixtures import Execd
from tests.integration.test_backend import run
from tests.polling import wait_until_async

pytestmark = [
    requires_bwrap,
    pytest.mark.timeout(90),
    pytest.mark.skipif(seccomp.host_arch() is None, reason="no seccomp filter for this architecture"),
]

_MODES = ["id-range", "one-id", "warm-pool"]


@pytest.fixture(params=_MODES)
async def sandbox(request: pytest.FixtureRequest, backend_data_dir: Path) -> AsyncIterator[BwrapSandbox]:
    """One sandbox per way of starting one, destroyed (and its backend closed) afterwards."""
    mode = request.param
    if mode == "id-range" and os.geteuid() != 0:
        pytest.skip("sandboxes get a range of ids only when the server is root")
    backend = BwrapBackend(backend_data_dir, pool_size=1 if mode == "warm-pool" else 0)
    handle: BwrapSandbox | None = None
    try:
        if mode == "one-id":
            backend._single_id_reason = backend._single_id_reason or "forced by the test"
        if mode == "warm-pool":
            await backend.start()
            await wait_until_async(lambda: backend.pooled == 1, timeout=30)
        sandbox_id = f"sc-{secrets.token_hex(4)}"
        state_dir = backend_data_dir / "sandboxes" / sandbox_id
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        created = await backend.create(SandboxSpec(sandbox_id, [], state_dir))
        assert isinstance(created, BwrapSandbox)
        handle = created
        assert handle.ids_mapped == (mode != "one-id" and os.geteuid() == 0)
        assert handle.from_pool == (mode == "warm-pool")
        yield handle
    finally:
        if handle is not None:
            await backend.destroy(handle)
        await backend.close()


async def _ok(sandbox: BwrapSandbox, script: str, **ids: int) -> str:
    """Run a shell script that must succeed (as `uid`/`gid` when given); returns its stdout."""
    options: dict[str, Any] = dict(ids)
    code, out, err = await run(sandbox, ["sh", "-c", script], **options)
    assert code == 0, (script, out, err)
    return out


# --- what is refused ----------------------------------------------------------------------------

#: Calls `unshare(CLONE_NEWUSER)` through ctypes and prints the errno (0: it succeeded).
_UNSHARE_USER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())
"""


async def test_nested_user_namespaces_are_refused(sandbox: BwrapSandbox) -> None:
    for argv in (["unshare", "--user", "true"], ["unshare", "--user", "--map-root-user", "true"]):
        code, _, err = await run(sandbox, argv)
        assert code != 0 and "Operation not permitted" in err, (argv, err)
    code, _, err = await run(sandbox, ["unshare", "--mount", "true"])
    assert code != 0 and "Operation not permitted" in err
    assert await _ok(sandbox, f"python3 -c '{_UNSHARE_USER}'") == "1\n"  # EPERM


async def test_root_of_a_range_cannot_unshare_either(sandbox: BwrapSandbox) -> None:
    if not sandbox.ids_mapped:
        pytest.skip("uid 0 exists inside only with a range of ids")
    for argv in (["unshare", "--user", "true"], ["unshare", "--mount", "--net", "true"]):
        code, _, err = await run(sandbox, argv, uid=0)
        assert code != 0 and "Operation not permitted" in err, (argv, err)


def _probe(names: list[str]) -> str:
    """A python script calling each named syscall with harmless arguments; prints {name: errno}."""
    column = 0 if seccomp.host_arch() == "x86_64" else 1
    numbers = {name: seccomp.SYSCALLS[name][column] for name in names}
    return (
        "import ctypes, json\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "result = {}\n"
        f"for name, nr in {numbers!r}.items():\n"
        "    ctypes.set_errno(0)\n"
        "    ret = libc.syscall(nr, 0, 0, 0, 0, 0, 0)\n"
        "    result[name] = 0 if ret >= 0 else ctypes.get_errno()\n"
        "print(json.dumps(result))\n"
    )


async def test_kernel_attack_syscalls_get_eperm(sandbox: BwrapSandbox) -> None:
    names = ["keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "mount", "umount2", "setns"]
    names += ["fsopen", "open_tree", "init_module", "kexec_load", "reboot", "clock_settime", "acct"]
    code, out, err = await run(sandbox, ["python3", "-c", _probe([*names, "clone3"])])
    assert code == 0, err
    errnos = json.loads(out)
    assert errnos == {**dict.fromkeys(names, 1), "clone3": 38}  # EPERM, ENOSYS


#: Sets up a real io_uring (1 entry, zeroed `io_uring_params`), then enters and registers on fd -1;
#: prints {name: errno} (0: the call succeeded). Unfiltered, setup succeeds and the others say EBADF.
_IO_URING = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
result = {}
calls = (("setup", 425, (1, params)), ("enter", 426, (-1, 0, 0, 0)), ("register", 427, (-1, 0, 0, 0)))
for name, nr, args in calls:
    ctypes.set_errno(0)
    result[name] = 0 if libc.syscall(nr, *args) >= 0 else ctypes.get_errno()
print(json.dumps(result))
"""


async def test_io_uring_is_refused_with_eperm(sandbox: BwrapSandbox) -> None:
    code, out, err = await run(sandbox, ["python3", "-c", _IO_URING])
    assert code == 0, err
    # EPERM, the errno Docker's default profile returns for what it denies
    assert json.loads(out) == {"setup": 1, "enter": 1, "register": 1}


async def test_vsock_sockets_are_refused_with_eperm(sandbox: BwrapSandbox) -> None:
    script = "\n".join(
        [
            "import socket",
            "try:",
            "    socket.socket(40, socket.SOCK_STREAM)",
            "except OSError as e:",
            "    print(e.errno)",
        ]
    )
    assert await _ok(sandbox, f"python3 -c '{script}'") == "1\n"  # AF_VSOCK: EPERM
    assert await _ok(sandbox, "python3 -c 'import socket; socket.socket(socket.AF_INET6)'") == ""


async def test_the_agent_and_every_command_run_under_the_filter(sandbox: BwrapSandbox) -> None:
    out = await _ok(sandbox, "grep -h '^Seccomp:' /proc/1/status /proc/self/status")
    assert out == "Seccomp:\t2\nSeccomp:\t2\n"  # 2: filter mode, for PID 1 (the agent) and this shell


# --- what keeps working -------------------------------------------------------------------------

_THREADS_FORK_FDS = """
import os, socket, subprocess, threading
results = []
threads = [threading.Thread(target=results.append, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert sorted(results) == list(range(8))
pid = os.fork()
if pid == 0:
    os.execvp("true", ["true"])
assert os.waitpid(pid, 0)[1] == 0
assert subprocess.run(["echo", "spawned"], capture_output=True, text=True).stdout == "spawned\\n"
left, right = socket.socketpair()
read_end, write_end = os.pipe()
socket.send_fds(left, [b"fd"], [write_end])
_, fds, _, _ = socket.recv_fds(right, 2, 1)
os.write(fds[0], b"through a passed pipe")
print(os.read(read_end, 100).decode())
"""

_HTTP = """
import time, urllib.request
deadline = time.monotonic() + 20
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/", timeout=5) as response:
            print(response.status)
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
"""


async def test_threads_fork_pipes_and_fd_passing_work(sandbox: BwrapSandbox) -> None:
    code, out, err = await run(sandbox, ["python3", "-c", _THREADS_FORK_FDS])
    assert (code, out) == (0, "through a passed pipe\n"), err
    assert await _ok(sandbox, "echo piped | tr a-z A-Z | cat") == "PIPED\n"


async def test_a_loopback_server_and_pip_work(sandbox: BwrapSandbox) -> None:
    script = (
        "python3 -m http.server 8000 --bind 127.0.0.1 --directory /workspace >/dev/null 2>&1 & server=$!; "
        f"python3 -c '{_HTTP}'; status=$?; kill $server; wait $server; exit $status"
    )
    assert await _ok(sandbox, script) == "200\n"
    assert (await _ok(sandbox, "python3 -m pip --version")).startswith("pip ")


async def test_per_command_identities_still_work(sandbox: BwrapSandbox) -> None:
    if not sandbox.ids_mapped:
        assert await _ok(sandbox, "id -u; id -g") == "1000\n1000\n"
        return
    for uid, gid in ((0, 0), (1001, 1000), (65535, 0)):
        assert await _ok(sandbox, "id -u; id -g", uid=uid, gid=gid) == f"{uid}\n{gid}\n"


async def test_file_transfers_work(execd: Execd) -> None:
    payload = os.urandom(300_000)
    files = [
        ("metadata", ("metadata", json.dumps({"path": "/workspace/blob.bin"}).encode(), "application/json")),
        ("file", ("blob.bin", payload, "application/octet-stream")),
    ]
    upload = await execd.client.post("/files/upload", files=files)
    assert upload.status_code == 200, upload.text
    download = await execd.client.get("/files/download", params={"path": "/workspace/blob.bin"})
    assert download.status_code == 200 and download.content == payload
    assert "Seccomp:\t2" in await execd.sh("grep Seccomp: /proc/1/status")


# --- where there is no filter -------------------------------------------------------------------


async def test_an_unsupported_architecture_starts_without_a_filter_and_says_so(
    backend_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bwrap_module, "filter_for_host", lambda: seccomp.filter_for_host("riscv64"))
    backend = BwrapBackend(backend_data_dir)
    handle: BwrapSandbox | None = None
    try:
        assert "no seccomp filter (not available for the riscv64 architecture)" in backend.description
        spec = SandboxSpec("plain", [], backend_data_dir / "sandboxes" / "plain")
        created = await backend.create(spec)
        assert isinstance(created, BwrapSandbox)
        handle = created
        assert await _ok(handle, "grep '^Seccomp:' /proc/1/status") == "Seccomp:\t0\n"
    finally:
        if handle is not None:
            await backend.destroy(handle)
        await backend.close()


def test_the_backend_says_it_filters(backend_data_dir: Path) -> None:
    assert "seccomp denies nested user namespaces" in BwrapBackend(backend_data_dir).description
