"""The sandbox seccomp filter as a program: run it in a small classic-BPF interpreter over sample
`seccomp_data` for both supported architectures, and check its syscall table against this
machine's kernel headers when they are installed."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osbox.server._backend.bwrap import seccomp as sc

_INSN = struct.Struct("=HBBI")
_ALLOW = sc.RET_ALLOW
_EPERM = sc.RET_ERRNO | sc.EPERM
_ENOSYS = sc.RET_ERRNO | sc.ENOSYS
_KILL = sc.RET_KILL_PROCESS
_BPF_MAXINSNS = 4096

#: Syscalls the agent and ordinary workloads need, as (x86_64, aarch64) numbers.
_NEEDED = {
    "read": (0, 63),
    "write": (1, 64),
    "openat": (257, 56),
    "execve": (59, 221),
    "wait4": (61, 260),
    "setresuid": (117, 147),
    "setresgid": (119, 149),
    "setgroups": (116, 159),
    "capset": (126, 91),
    "socket": (41, 198),
    "connect": (42, 203),
    "sendmsg": (46, 211),
    "recvmsg": (47, 212),
    "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424),
    "prctl": (157, 167),
}
_COLUMN = {"x86_64": 0, "aarch64": 1}
_ARCHES = sorted(sc.ARCHES)
_SPECIAL = {*sc.DENIED, *sc.NO_NEW_USER_NAMESPACE, *sc.NOT_IMPLEMENTED, "socket"}


def run_filter(program: bytes, *, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """Run a classic-BPF seccomp program over one `seccomp_data`; returns its verdict.

    Knows the instructions a seccomp filter of this shape uses (32-bit absolute loads, jumps
    against constants, returns of constants) and fails on anything else, on reads past the data
    and on jumps out of the program, as the kernel's checker would.
    """
    full_args = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("=iIQ6Q", nr, arch, 0x7F0000001000, *full_args)
    insns = [_INSN.unpack_from(program, offset) for offset in range(0, len(program), _INSN.size)]
    assert len(program) % _INSN.size == 0 and 0 < len(insns) <= _BPF_MAXINSNS
    accumulator = 0
    pc = 0
    while True:
        assert 0 <= pc < len(insns), f"ran off the program at {pc}"
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == sc.BPF_LD_W_ABS:
            assert k % 4 == 0 and k + 4 <= len(data), f"load at {k}"
            (accumulator,) = struct.unpack_from("=I", data, k)
        elif code in (sc.BPF_JEQ_K, sc.BPF_JGE_K, sc.BPF_JSET_K):
            taken = {
                sc.BPF_JEQ_K: accumulator == k,
                sc.BPF_JGE_K: accumulator >= k,
                sc.BPF_JSET_K: bool(accumulator & k),
            }[code]
            pc += jt if taken else jf
        elif code == sc.BPF_RET_K:
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def _nr(arch: str, name: str) -> int:
    table = sc.SYSCALLS if name in sc.SYSCALLS else _NEEDED
    return table[name][_COLUMN[arch]]


@pytest.mark.parametrize("arch", _ARCHES)
def test_denied_syscalls_get_eperm(arch: str) -> None:
    program = sc.filter_program(arch)
    for name in sc.DENIED:
        verdict = run_filter(program, arch=sc.ARCHES[arch], nr=_nr(arch, name), args=(1, 2, 3))
        assert verdict == _EPERM, name


@pytest.mark.parametrize("arch", _ARCHES)
def test_needed_syscalls_are_allowed(arch: str) -> None:
    program = sc.filter_program(arch)
    for name in _NEEDED:
        assert run_filter(program, arch=sc.ARCHES[arch], nr=_nr(arch, name), args=(0, 1)) == _ALLOW, name


@pytest.mark.parametrize("arch", _ARCHES)
@pytest.mark.parametrize("call", ["clone", "unshare"])
def test_a_new_user_namespace_is_refused_other_flags_pass(arch: str, call: str) -> None:
    program = sc.filter_program(arch)
    nr, audit = _nr(arch, call), sc.ARCHES[arch]
    # pthread_create's: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    thread_flags = 0x003D0F00
    new_namespaces = 0x20000 | 0x04000000 | 0x40000000  # CLONE_NEWNS, NEWUTS, NEWNET
    assert run_filter(program, arch=audit, nr=nr, args=(sc.CLONE_NEWUSER,)) == _EPERM
    assert run_filter(program, arch=audit, nr=nr, args=(sc.CLONE_NEWUSER | new_namespaces,)) == _EPERM
    assert run_filter(program, arch=audit, nr=nr, args=(sc.CLONE_NEWUSER | 1 << 40,)) == _EPERM
    assert run_filter(program, arch=audit, nr=nr, args=(thread_flags,)) == _ALLOW
    assert run_filter(program, arch=audit, nr=nr, args=(new_namespaces,)) == _ALLOW  # caps decide
    assert run_filter(program, arch=audit, nr=nr, args=(0x11,)) == _ALLOW  # fork(): SIGCHLD
    # Only the flags argument counts: CLONE_NEWUSER's bit in another argument is a pointer's.
    assert run_filter(program, arch=audit, nr=nr, args=(0x11, sc.CLONE_NEWUSER)) == _ALLOW


@pytest.mark.parametrize("arch", _ARCHES)
def test_vsock_sockets_are_refused_other_families_pass(arch: str) -> None:
    program = sc.filter_program(arch)
    nr, audit = _nr(arch, "socket"), sc.ARCHES[arch]
    assert run_filter(program, arch=audit, nr=nr, args=(sc.AF_VSOCK, 1, 0)) == _EPERM
    for family in (1, 2, 10, 16, 17):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET
        assert run_filter(program, arch=audit, nr=nr, args=(family, 1, 0)) == _ALLOW, family


@pytest.mark.parametrize("arch", _ARCHES)
def test_clone3_gets_enosys(arch: str) -> None:
    program = sc.filter_program(arch)
    assert run_filter(program, arch=sc.ARCHES[arch], nr=_nr(arch, "clone3"), args=(1, 88)) == _ENOSYS


@pytest.mark.parametrize("arch", _ARCHES)
def test_another_architecture_is_killed(arch: str) -> None:
    program = sc.filter_program(arch)
    i386, arm = 0x40000003, 0x40000028  # AUDIT_ARCH_I386, AUDIT_ARCH_ARM
    other = next(value for name, value in sc.ARCHES.items() if name != arch)
    for audit in (i386, arm, other, 0):
        assert run_filter(program, arch=audit, nr=_nr(arch, "read")) == _KILL, hex(audit)


def test_x32_syscalls_are_killed_on_x86_64() -> None:
    program = sc.filter_program("x86_64")
    x86_64 = sc.ARCHES["x86_64"]
    for name in ("read", "keyctl", "unshare"):
        nr = _nr("x86_64", name) | sc.X32_SYSCALL_BIT
        assert run_filter(program, arch=x86_64, nr=nr, args=(sc.CLONE_NEWUSER,)) == _KILL, name


@pytest.mark.parametrize("arch", _ARCHES)
@given(nr=st.integers(min_value=0, max_value=1023), args=st.lists(st.integers(0, 2**64 - 1), max_size=6))
def test_everything_else_is_allowed(arch: str, nr: int, args: list[int]) -> None:
    special = {_nr(arch, name) for name in _SPECIAL}
    if nr in special:
        return
    assert run_filter(sc.filter_program(arch), arch=sc.ARCHES[arch], nr=nr, args=tuple(args)) == _ALLOW


def test_the_program_is_packed_as_struct_sock_filter() -> None:
    program = sc.filter_program("x86_64")
    assert len(program) % 8 == 0
    first = _INSN.unpack_from(program, 0)
    assert first == (sc.BPF_LD_W_ABS, 0, 0, 4)  # seccomp_data.arch, checked before anything else
    assert sc.filter_program("x86_64") == program  # deterministic: built once per backend


def test_assembler_refuses_unknown_and_backward_labels() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        sc.assemble([sc.Insn(sc.BPF_JEQ_K, 1, jt="nowhere"), sc.Insn(sc.BPF_RET_K, 0)])
    backward = [sc.Insn(sc.BPF_RET_K, 0, label="top"), sc.Insn(sc.BPF_JEQ_K, 1, jt="top")]
    with pytest.raises(ValueError, match="out of range"):
        sc.assemble(backward)


def test_unsupported_architectures_get_no_filter_and_say_so() -> None:
    assert sc.host_arch("x86_64") == sc.host_arch("amd64") == "x86_64"
    assert sc.host_arch("arm64") == sc.host_arch("aarch64") == "aarch64"
    program, message = sc.filter_for_host("riscv64")
    assert program is None and "riscv64" in message and "no seccomp filter" in message
    with pytest.raises(ValueError, match="riscv64"):
        sc.build("riscv64")
    program, message = sc.filter_for_host("x86_64")
    assert program == sc.filter_program("x86_64") and "user namespaces" in message


def _header_numbers(path: Path, *, generic: bool) -> dict[str, int]:
    pattern = r"#define __NR(?:3264)?_(\w+)\s+(\d+)" if generic else r"#define __NR_(\w+)\s+(\d+)"
    return {name: int(number) for name, number in re.findall(pattern, path.read_text())}


@pytest.mark.parametrize(
    ("arch", "header", "generic"),
    [
        ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", False),
        ("aarch64", "/usr/include/asm-generic/unistd.h", True),  # arm64 uses the generic table
    ],
)
def test_syscall_numbers_match_the_kernel_headers(arch: str, header: str, generic: bool) -> None:
    path = Path(header)
    if not path.is_file():
        pytest.skip(f"{header} is not installed (Debian package linux-libc-dev)")
    numbers = _header_numbers(path, generic=generic)
    for name, pair in {**sc.SYSCALLS, **_NEEDED}.items():
        assert numbers.get(name) == pair[_COLUMN[arch]], name
