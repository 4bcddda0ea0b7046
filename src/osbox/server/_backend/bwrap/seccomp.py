"""The seccomp filter every sandbox runs under: a classic-BPF program for bwrap's `--seccomp FD`.

Pure: `filter_program(arch)` returns the program's bytes (an array of `struct sock_filter
{u16 code; u8 jt; u8 jf; u32 k}` in native byte order, what libseccomp's `seccomp_export_bpf`
writes); the backend puts it in a memfd once and hands bwrap a fresh descriptor per sandbox.
bwrap installs it just before it execs the agent, so the agent and every workload inherit it.

Policy (close to Docker's default profile where it matters for a shared kernel):

- the syscall's architecture must be the one the filter was built for, or the process is killed:
  i386 (`int 0x80`) and x32 syscalls on x86_64 would otherwise use other numbers and pass;
- `unshare` and `clone` with `CLONE_NEWUSER` in their flags fail with EPERM (nested user
  namespaces are a well-known kernel attack surface, and they would give back the capabilities
  that `--cap-drop ALL` took away); `clone3` fails with ENOSYS, because its flags are in a struct
  BPF cannot read, and glibc then falls back to `clone`;
- `socket(AF_VSOCK, ...)` fails with EPERM, as in Docker's profile: vsock is not network-namespaced,
  so on a VM it would reach the hypervisor's services past the sandbox's own loopback-only network;
- the syscalls in `DENIED` fail with EPERM (modules, kexec, bpf, keyrings, mounting, io_uring, ...);
- everything else is allowed.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ARCHES",
    "DENIED",
    "NOT_IMPLEMENTED",
    "NO_NEW_USER_NAMESPACE",
    "SYSCALLS",
    "Insn",
    "assemble",
    "build",
    "filter_for_host",
    "filter_program",
    "host_arch",
]

# --- kernel constants (linux/audit.h, linux/seccomp.h, linux/filter.h, linux/sched.h, errno.h) ---

#: `seccomp_data.arch` per supported machine (AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64).
ARCHES: Mapping[str, int] = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: x86_64 syscalls made through the x32 ABI have this bit set in their number.
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
AF_VSOCK = 40
EPERM = 1
ENOSYS = 38

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # both supported machines are little-endian: the low half comes first

# classic BPF opcodes
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
BPF_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

#: Syscall numbers as (x86_64, aarch64). From the kernel's uapi headers: x86_64 from
#: arch/x86/entry/syscalls/syscall_64.tbl (`asm/unistd_64.h`), aarch64 from the generic table
#: `include/uapi/asm-generic/unistd.h`; cross-checked against this machine's
#: /usr/include/x86_64-linux-gnu/asm/unistd_64.h and /usr/include/asm-generic/unistd.h.
SYSCALLS: Mapping[str, tuple[int, int]] = {
    "clone": (56, 220),
    "unshare": (272, 97),
    "clone3": (435, 435),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "acct": (163, 89),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "pivot_root": (155, 41),
    "mount": (165, 40),
    "umount2": (166, 39),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "mount_setattr": (442, 442),
    "setns": (308, 268),
    "socket": (41, 198),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
}
_ARCH_COLUMN = {"x86_64": 0, "aarch64": 1}

#: Denied outright with EPERM. Nothing in a sandbox mounts once bwrap is done (the agent does not).
DENIED: tuple[str, ...] = (
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "pivot_root",
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "setns",
    # io_uring: its operations run in kernel worker threads that this filter never sees (an
    # `IORING_OP_OPENAT` is not an `openat`), and it has been the source of a long run of local
    # privilege escalations. EPERM, as the kernel itself answers with `kernel.io_uring_disabled`
    # set, so io_uring users (liburing, libuv, tokio) already treat it as "not here" and fall back.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
#: Denied with EPERM when their first argument (the flags) has CLONE_NEWUSER.
NO_NEW_USER_NAMESPACE: tuple[str, ...] = ("clone", "unshare")
#: Denied with ENOSYS, so that callers fall back to a syscall the filter can inspect.
NOT_IMPLEMENTED: tuple[str, ...] = ("clone3",)


@dataclass(frozen=True)
class Insn:
    """One BPF instruction; `jt`/`jf` name a later instruction's label (None: the next one)."""

    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None
    label: str | None = None  # this instruction's own label


def build(arch: str) -> list[Insn]:
    """The filter for `arch` ("x86_64" or "aarch64") as labelled instructions."""
    if arch not in ARCHES:
        raise ValueError(f"no seccomp filter for the {arch} architecture")
    column = _ARCH_COLUMN[arch]

    def nr(name: str) -> int:
        return SYSCALLS[name][column]

    program = [
        Insn(BPF_LD_W_ABS, _OFFSET_ARCH),
        Insn(BPF_JEQ_K, ARCHES[arch], jf="kill"),
        Insn(BPF_LD_W_ABS, _OFFSET_NR),
    ]
    if arch == "x86_64":
        program.append(Insn(BPF_JGE_K, X32_SYSCALL_BIT, jt="kill"))
    program += [Insn(BPF_JEQ_K, nr(name), jt="eperm") for name in DENIED]
    program += [Insn(BPF_JEQ_K, nr(name), jt="flags") for name in NO_NEW_USER_NAMESPACE]
    program += [Insn(BPF_JEQ_K, nr(name), jt="enosys") for name in NOT_IMPLEMENTED]
    program += [
        Insn(BPF_JEQ_K, nr("socket"), jt="family"),
        Insn(BPF_RET_K, RET_ALLOW),
        Insn(BPF_LD_W_ABS, _OFFSET_ARG0_LOW, label="flags"),
        Insn(BPF_JSET_K, CLONE_NEWUSER, jt="eperm"),
        Insn(BPF_RET_K, RET_ALLOW),
        Insn(BPF_LD_W_ABS, _OFFSET_ARG0_LOW, label="family"),
        Insn(BPF_JEQ_K, AF_VSOCK, jt="eperm"),
        Insn(BPF_RET_K, RET_ALLOW),
        Insn(BPF_RET_K, RET_ERRNO | EPERM, label="eperm"),
        Insn(BPF_RET_K, RET_ERRNO | ENOSYS, label="enosys"),
        Insn(BPF_RET_K, RET_KILL_PROCESS, label="kill"),
    ]
    return program


def assemble(program: Sequence[Insn]) -> bytes:
    """Resolve labels to relative jumps and pack `struct sock_filter`s in native byte order."""
    where = {insn.label: index for index, insn in enumerate(program) if insn.label is not None}

    def offset(index: int, label: str | None) -> int:
        if label is None:
            return 0
        if label not in where:
            raise ValueError(f"unknown label {label!r}")
        jump = where[label] - index - 1
        if not 0 <= jump <= 0xFF:
            raise ValueError(f"jump to {label!r} from instruction {index} out of range ({jump})")
        return jump

    return b"".join(
        struct.pack("=HBBI", insn.code, offset(i, insn.jt), offset(i, insn.jf), insn.k)
        for i, insn in enumerate(program)
    )


def filter_program(arch: str) -> bytes:
    """The compiled filter for `arch`, ready for bwrap's `--seccomp FD`."""
    return assemble(build(arch))


def host_arch(machine: str | None = None) -> str | None:
    """This machine's architecture in `ARCHES` terms (`machine` as `uname -m`), or None if unsupported."""
    name = (machine if machine is not None else platform.machine()).lower()
    name = {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)
    return name if name in ARCHES else None


def filter_for_host(machine: str | None = None) -> tuple[bytes | None, str]:
    """(the filter for this machine or None, a sentence saying what sandboxes get)."""
    arch = host_arch(machine)
    if arch is None:
        shown = machine if machine is not None else platform.machine()
        return None, f"no seccomp filter (not available for the {shown} architecture)"
    return filter_program(arch), "seccomp denies nested user namespaces and kernel-attack syscalls"
