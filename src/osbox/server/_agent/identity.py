"""Which user and group ids exist in this sandbox, and how a child of the agent becomes one of them.

Stdlib only (the agent runs it). The kernel's own maps tell the two set-ups apart:

- **one id** (the server is not root, or the kernel refused a range): `/proc/self/uid_map` maps
  only 1000, the agent holds no capability, and every child runs as 1000:1000. Asking for any
  other uid/gid is a `ValueError` (the API answers 400).
- **a range** (the server is root): sandbox ids 0..65535 map to a host range of their own. bwrap
  starts the agent as uid/gid 1000 with CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_KILL,
  CAP_SETGID and CAP_SETUID. `start()` clears the inheritable set (and with it the ambient set bwrap
  raised), so only the agent itself holds them. Every child, whatever ids it asked for (the
  default is 1000:1000), sets its groups, gid and uid and then drops *every* capability before
  exec. bwrap set no_new_privs, which children inherit and cannot unset: with an empty permitted
  set, no exec can gain a capability back, not even as uid 0 (the kernel caps the new permitted set
  at the old one), and setuid bits and file capabilities are ignored.

Capabilities in a user namespace only ever apply to files and processes whose ids are mapped in
it: the agent's CAP_DAC_OVERRIDE opens this sandbox's files, never the host's nor another
sandbox's (their owners are not mapped here), and the read-only mounts stay read-only.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "act_as_default_user",
    "become",
    "check_mapped",
    "child_ids",
    "enter_root",
    "file_capabilities",
    "libc_function",
    "owner_change",
    "privileged",
    "set_default_ids",
    "start",
]

_CAP_VERSION_3 = 0x20080522
_state: dict[str, Any] = {"capset": None, "privileged": None, "maps": {}}


def _mapped(kind: str) -> tuple[int, int]:
    """(first id, how many) of this process's `kind` ("uid"/"gid") map (its first line)."""
    maps = _state["maps"]
    if kind not in maps:
        first, count = 0, 1 << 32
        try:
            with open(f"/proc/self/{kind}_map") as lines:
                fields = lines.readline().split()
            if len(fields) == 3:
                first, count = int(fields[0]), int(fields[2])
        except (OSError, ValueError):
            pass
        maps[kind] = (first, count)
    result: tuple[int, int] = maps[kind]
    return result


def check_mapped(kind: str, value: int) -> None:
    """Raise ValueError unless `value` is a `kind` ("uid"/"gid") that exists in this sandbox."""
    first, count = _mapped(kind)
    if first <= value < first + count:
        return
    if count == 1:
        raise ValueError(
            f"{kind} {value} does not exist in this sandbox: only {kind} {first} is mapped "
            "(sandboxes get a range of ids only when the server runs as root)"
        )
    last = first + count - 1
    raise ValueError(f"{kind} {value} does not exist in this sandbox: {kind}s {first}..{last} do")


def _capabilities(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def privileged() -> bool:
    """Whether the agent holds capabilities (the range set-up): children must then drop them."""
    if _state["privileged"] is None:
        _state["privileged"] = _capabilities("CapPrm") != 0
    return bool(_state["privileged"])


def libc_function(name: str) -> Any:
    """A libc function through `_ctypes` alone (`import ctypes` would cost ~5 ms per sandbox start):
    called with ints and bytes, it returns the int result; a negative one raises OSError(errno)."""
    import _ctypes as _ctypes_module

    _ctypes: Any = _ctypes_module  # the C core of ctypes: private, stable, untyped here

    class _Int(_ctypes._SimpleCData):  # type: ignore[misc]
        _type_ = "i"

    class _Function(_ctypes.CFuncPtr):  # type: ignore[misc]
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    class _Program:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)

    function = _Function((name, _Program))

    def call(*args: object) -> int:
        result: int = function(*args)
        if result < 0:
            number = _ctypes.get_errno()
            raise OSError(number, os.strerror(number), name)
        return result

    return call


def _make_capset() -> Any:
    """`capset(2)` for this thread."""
    function = libc_function("capset")

    def capset(permitted: int, inheritable: int, effective: int | None = None) -> None:
        words = [permitted if effective is None else effective, permitted, inheritable]
        data = b"".join(
            (value >> shift & 0xFFFFFFFF).to_bytes(4, sys.byteorder) for shift in (0, 32) for value in words
        )
        header = _CAP_VERSION_3.to_bytes(4, sys.byteorder) + bytes(4)  # pid 0: this thread
        function(header, data)

    return capset


def start() -> None:
    """At agent start: keep the capabilities for the agent alone (clear inheritable and ambient).

    Fails (the sandbox does not start) rather than let children inherit capabilities.
    """
    if not privileged():
        return
    capset = _make_capset()
    capset(_capabilities("CapPrm"), 0)
    if _capabilities("CapAmb") or _capabilities("CapInh"):
        raise OSError("capabilities could not be confined to the agent")
    _state["capset"] = capset


_CLONE_FS = 0x200


def enter_root(path: str) -> None:
    """Make `path` this thread's root and cwd, for this thread alone (image sandboxes).

    `unshare(CLONE_FS)` gives the thread a root and cwd of its own, so the agent's other threads
    keep their view; every path the thread resolves from then on, and every child it forks, stays
    inside the image's root (absolute symlinks and `..` included), as in the sandbox's processes.
    """
    if "unshare" not in _state:
        _state["unshare"] = libc_function("unshare")
    _state["unshare"](_CLONE_FS)
    os.chroot(path)
    os.chdir("/")


#: Capabilities that override file permissions and ownership (CAP_CHOWN, CAP_DAC_OVERRIDE,
#: CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID): a file operation as a user other than root has none.
_FILE_CAPS = 0b11111
_CAP_CHOWN = 0b1


def act_as_default_user() -> None:
    """Make this thread's file operations those of the default user (an image's `User`): new files
    are theirs, and permissions are checked as for them (root's are root's), as for their commands.

    Per thread (fsuid, fsgid and the effective set are per thread); the agent's permitted set stays.
    """
    default = _state.get("default")
    if default is None or not privileged():
        return
    uid, gid = default
    if "setfsuid" not in _state:  # they answer the previous id, never an error
        _state["setfsuid"] = libc_function("setfsuid")
        _state["setfsgid"] = libc_function("setfsgid")
    permitted = _capabilities("CapPrm")
    _state["setfsgid"](gid)
    _state["setfsuid"](uid)
    _state["capset"](permitted, 0, permitted if uid == 0 else permitted & ~_FILE_CAPS)


def owner_change() -> Any:
    """A context in which this thread may chown (the files API's `owner`/`group`), as a command run
    with `uid=0` could: raises CAP_CHOWN in the effective set for the block."""
    return file_capabilities(_CAP_CHOWN)


def file_capabilities(mask: int = _FILE_CAPS) -> Any:
    """A context in which this thread holds the file capabilities in `mask` (see `_FILE_CAPS`),
    whatever user its file operations act as; they are lowered again after the block."""

    class _Raised:
        def __enter__(self) -> None:
            if privileged() and _state.get("capset") is not None:
                permitted = _capabilities("CapPrm")
                _state["capset"](permitted, 0, _effective() | (permitted & mask))

        def __exit__(self, *exc: object) -> None:
            if privileged() and _state.get("capset") is not None:
                permitted = _capabilities("CapPrm")
                lowered = _state.get("default", (0, 0))[0] != 0
                _state["capset"](permitted, 0, _effective() & ~mask if lowered else permitted)

    return _Raised()


def _effective() -> int:
    return _thread_capabilities("CapEff")


def _thread_capabilities(field: str) -> int:
    """`field` of this thread's status (capabilities are per thread)."""
    with open("/proc/thread-self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def set_default_ids(uid: int, gid: int) -> None:
    """Whom children run as when a request names no uid (an image's `User`); checked as mapped."""
    check_mapped("uid", uid)
    check_mapped("gid", gid)
    _state["default"] = (uid, gid)


def child_ids(uid: object, gid: object) -> tuple[int, int] | None:
    """The (uid, gid) a child must switch to, or None when it simply keeps the agent's.

    A `gid` without a `uid` keeps the agent's uid; a `uid` without a `gid` takes the group of the
    same number (0:0, 1000:1000). Raises ValueError for ids that do not exist here.
    """
    for name, value in (("uid", uid), ("gid", gid)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer")
    default_uid, default_gid = _state.get("default") or (os.getuid(), os.getgid())
    if uid is None and gid is None:
        uid, gid = default_uid, default_gid
    if gid is None and uid is not None:
        gid = uid
    new_uid = default_uid if uid is None else int(uid)  # type: ignore[call-overload]
    new_gid = default_gid if gid is None else int(gid)  # type: ignore[call-overload]
    check_mapped("uid", new_uid)
    check_mapped("gid", new_gid)
    if not privileged():
        return None
    return new_uid, new_gid


def become(uid: int, gid: int) -> None:
    """In a forked child, before exec: take these ids, no supplementary group, no capability."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _state["capset"](0, 0)
