"""What a sandbox looks like: its state-dir layout on the host and its view of the file system.

Host side, per sandbox (`state_dir`, owned by the server):

    disk.img                          the sandbox's disk, mounted at fs/ (see `disk`; with a quota)
    fs/upper  fs/work                 an image sandbox's writable layer (see `rootfs`)
    fs/workspace  fs/tmp  fs/home     a sandbox without an image: its private writable dirs
    run/agent.sock                    the agent's listening socket (only the host can reach it)
    run/agent.json                    pids, uid and cgroups, to re-adopt after a server restart
    run/agent.log                     bubblewrap's and the agent's own stderr
    run/entrypoint.log                the entrypoint's stdout+stderr (`SandboxHandle.log_path`)

Inside an image sandbox (`SandboxSpec.image`): the image's root (`rootfs`) with fresh `/dev` and
`/proc`, `/sys` read-only, its own /etc/hosts, /etc/hostname and /etc/resolv.conf, and the spec's
mounts. The agent alone sees the view below around it, with the image's root at `IMAGE_ROOT`.

Inside a sandbox without an image (the agent's own view): the host's top-level directories
read-only, fresh `/dev`, `/proc`, `/run` and `/home`; `/workspace`, `/tmp` and `/home/sandbox`
writable; the user is `sandbox` (uid 1000, gid 1000, `HOME=/home/sandbox`); /etc/passwd and
/etc/group name only `root` (0), `sandbox` (1000) and `nobody`/`nogroup` (65534, which is also how
ids that are not mapped, such as the host's root, show). The server's data dir is covered by an
empty read-only tmpfs, and the agent's code is at `/run/osbox/agent`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "AGENT_CAPABILITIES",
    "AGENT_DIR",
    "DEFAULT_PATH",
    "IMAGE_CAPABILITIES",
    "IMAGE_ROOT",
    "SANDBOX_GID",
    "SANDBOX_HOME",
    "SANDBOX_UID",
    "SANDBOX_USER",
    "WORKSPACE",
    "BwrapFds",
    "ImageView",
    "StateLayout",
    "TmpfsSizes",
    "base_env",
    "bwrap_argv",
    "hidden_paths",
    "image_etc_files",
    "resolv_conf",
    "root_entries",
    "sandbox_passwd",
    "shadow_dirs",
    "tmpfs_sizes",
]

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = "sandbox"
SANDBOX_HOME = "/home/sandbox"
WORKSPACE = "/workspace"
AGENT_DIR = "/run/osbox/agent"
#: Where an image sandbox's root is, in the agent's view: every workload and every file operation
#: runs chrooted there (see `_agent/main.py`); the agent alone keeps the view around it.
IMAGE_ROOT = "/run/osbox/root"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Top-level host entries the sandbox does not get (replaced by its own, or useless).
_NOT_SHARED = frozenset({"proc", "dev", "tmp", "home", "run", "workspace", "lost+found"})


_MiB = 2**20


@dataclass(frozen=True)
class TmpfsSizes:
    """Byte sizes of the sandbox's tmpfs mounts (see `tmpfs_sizes`)."""

    shm: int  # /dev/shm
    run: int  # /run
    cover: int  # /home (around the bound /home/sandbox) and every read-only cover


def tmpfs_sizes(memory_bytes: int | None) -> TmpfsSizes:
    """Sizes that keep the sandbox's tmpfs mounts, together, well within its memory limit.

    tmpfs pages are charged to the sandbox's memory cgroup and cannot be reclaimed, so a full
    tmpfs the size of the limit would leave the OOM killer nothing but the sandbox's processes.
    Sized at most a quarter (/dev/shm, 64 MiB at most, Docker's default) plus a sixteenth (/run)
    of the limit, filling them gets ENOSPC instead. Unlimited sandboxes get the maximum sizes.
    """
    shm, run = 64 * _MiB, 8 * _MiB
    if memory_bytes is not None:
        shm, run = min(shm, memory_bytes // 4), min(run, memory_bytes // 16)
    return TmpfsSizes(shm=shm, run=run, cover=_MiB)


@dataclass(frozen=True)
class StateLayout:
    """Paths inside one sandbox's state dir (see the module docstring)."""

    state_dir: Path

    @property
    def workspace(self) -> Path:
        return self.state_dir / "fs" / "workspace"

    @property
    def tmp(self) -> Path:
        return self.state_dir / "fs" / "tmp"

    @property
    def home(self) -> Path:
        return self.state_dir / "fs" / "home"

    @property
    def run(self) -> Path:
        return self.state_dir / "run"

    @property
    def socket(self) -> Path:
        return self.run / "agent.sock"

    @property
    def record(self) -> Path:
        return self.run / "agent.json"

    @property
    def agent_log(self) -> Path:
        return self.run / "agent.log"

    @property
    def entrypoint_log(self) -> Path:
        return self.run / "entrypoint.log"


def root_entries() -> list[tuple[str, str | None]]:
    """The host's top-level entries to share: (name, symlink target or None)."""
    entries: list[tuple[str, str | None]] = []
    for name in sorted(os.listdir("/")):
        if name in _NOT_SHARED:
            continue
        path = "/" + name
        try:
            if os.path.islink(path):
                entries.append((name, os.readlink(path)))
            elif stat.S_ISDIR(os.stat(path).st_mode) or stat.S_ISREG(os.stat(path).st_mode):
                entries.append((name, None))
        except OSError:
            continue
    return entries


def _reachable_by_others(path: Path) -> bool:
    """Whether a user with no relation to the owners could reach `path` (every ancestor o+x)."""
    for directory in [path, *path.parents]:
        try:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def hidden_paths(paths: Sequence[Path], *, same_user: bool) -> list[str]:
    """Which of `paths` need an empty tmpfs over them inside the sandbox.

    A path under a directory the sandbox gets its own copy of (`/tmp`, `/home`, `/run`) is not
    visible anyway, and covering it would create directories in the sandbox's own copy. A path the
    sandbox user cannot reach needs no cover either (and bwrap could not mount over it). When the
    sandbox runs as the server's own user (`same_user`), everything reachable is covered.
    """
    hidden: list[str] = []
    for path in paths:
        parts = path.parts
        if len(parts) < 2 or parts[1] in _NOT_SHARED or not path.is_dir():
            continue
        if not same_user and not _reachable_by_others(path):
            continue
        if not any(path == Path(h) or Path(h) in path.parents for h in hidden):
            hidden.append(str(path))
    return hidden


def shadow_dirs(sandbox_paths: Sequence[str], entries: Sequence[tuple[str, str | None]]) -> list[str]:
    """Host directories to re-create as tmpfs so that mount points can be made inside them.

    A mount point under a read-only host directory (e.g. `/mnt/data` when the host has `/mnt`
    but no `/mnt/data`) cannot be created there. Such a directory is covered by a tmpfs that gets
    the host's entries bound back in, read-only, next to the new mount point.
    """
    shared = {"/" + name for name, target in entries if target is None}
    shadows: list[str] = []
    for target in sandbox_paths:
        path = PurePosixPath(target)
        if len(path.parts) < 3 or "/" + path.parts[1] not in shared or os.path.lexists(target):
            continue
        existing = PurePosixPath("/")
        for part in path.parts[1:]:
            if not os.path.isdir(existing / part) or os.path.islink(existing / part):
                break
            existing = existing / part
        if str(existing) != "/" and str(existing) not in shadows:
            shadows.append(str(existing))
    return sorted(shadows, key=lambda p: p.count("/"))


def _shadow_argv(directory: str, size: int) -> list[str]:
    argv = ["--size", str(size), "--tmpfs", directory]
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) or os.path.isfile(path):
            argv += ["--ro-bind", path, path]
    return argv


_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_view_argv(cgroup_dirs: Sequence[Path], size: int, *, under: str = "") -> list[str]:
    """Cover /sys/fs/cgroup; bind each of the sandbox's groups where its hierarchy is mounted
    (all of it `under` another root when given)."""
    if not _CGROUP_ROOT.is_dir():
        return []
    argv = ["--size", str(size), "--tmpfs", under + str(_CGROUP_ROOT)]
    for directory in cgroup_dirs:
        if _CGROUP_ROOT not in directory.parents:
            continue
        hierarchy = _CGROUP_ROOT / directory.relative_to(_CGROUP_ROOT).parts[0]
        # A pure v2 machine mounts the hierarchy at /sys/fs/cgroup itself.
        target = _CGROUP_ROOT if (_CGROUP_ROOT / "cgroup.procs").exists() else hierarchy
        argv += ["--ro-bind", str(directory), under + str(target)]
    return [*argv, "--remount-ro", under + str(_CGROUP_ROOT)]


def base_env(spec_env: Mapping[str, str], *, image: bool = False) -> dict[str, str]:
    """The sandbox's base environment: a clean login-like set, then the spec's variables.

    In an image, HOME, USER and LOGNAME are the image user's (the agent sets them from the
    image's /etc/passwd, unless the image's or the request's env does)."""
    env = {"PATH": DEFAULT_PATH, "TERM": "xterm"}
    if not image:
        env.update({"HOME": SANDBOX_HOME, "USER": SANDBOX_USER, "LOGNAME": SANDBOX_USER, "LANG": "C.UTF-8"})
    env.update(spec_env)
    return env


def image_etc_files(hostname: str) -> dict[str, str]:
    """What an image sandbox finds in /etc/hosts, /etc/hostname and /etc/resolv.conf (its own
    writable copies, bound over the image's, as a container engine does)."""
    return {
        "/etc/hosts": (
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
        "/etc/hostname": f"{hostname}\n",
        "/etc/resolv.conf": resolv_conf(None),
    }


def resolv_conf(nameserver: str | None) -> str:
    """An image sandbox's /etc/resolv.conf: its network's resolver (written once it is attached)."""
    if nameserver is None:
        return "# osbox: this sandbox has no network, so no name server\n"
    return f"# osbox: the sandbox network's resolver\nnameserver {nameserver}\n"


def sandbox_passwd() -> tuple[str, str]:
    """The sandbox's /etc/passwd and /etc/group: the users it provides, and no host account."""
    passwd = (
        "root:x:0:0:root:/root:/bin/bash\n"
        f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:{SANDBOX_HOME}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"
    return passwd, group


#: What the agent may do inside its user namespace when the sandbox has a range of ids (see
#: `_agent/identity.py`): switch ids for its children, chown to any sandbox id, reach every
#: sandbox-owned file, signal any process of the sandbox. Never passed on to a child.
AGENT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
)


#: With an image: the agent also chroots its workloads and its file-operation threads into it.
IMAGE_CAPABILITIES = (*AGENT_CAPABILITIES, "CAP_SYS_CHROOT")


@dataclass(frozen=True)
class ImageView:
    """An image sandbox's view: its root (mounted by the server in the sandbox's own mount
    namespace before bwrap goes on, see `rootfs`), and the files written for it."""

    source: str  # the mounted overlay, as a path bwrap can bind
    user: str  # whom processes run as by default (the image's User)
    etc_files: Mapping[str, int]  # "/etc/hosts" -> fd with its contents (writable copies)


@dataclass(frozen=True)
class BwrapFds:
    """Descriptors handed to bwrap (each is inherited at the same number)."""

    workspace: int | None  # None with an image: its root holds /workspace, /tmp and homes
    tmp: int | None
    home: int | None
    listen: int
    log: int
    info: int  # bwrap writes {"child-pid": N, ...} here right after it forks the agent
    agent_files: Mapping[str, int]  # file name -> fd with its contents
    etc_files: Mapping[str, int]  # "/etc/passwd" -> fd with its contents
    mounts: Sequence[tuple[int, str, bool]]  # (fd, sandbox path, read-only)
    #: With an id range: bwrap waits on this fd until the server has written the namespace's maps.
    userns_block: int | None = None
    #: The process lifeline's read end (see `lifeline`), for sandboxes that die with the server.
    lifeline: int | None = None
    #: The compiled seccomp filter (see `seccomp`), installed by bwrap just before it execs the agent.
    seccomp: int | None = None


def bwrap_argv(
    *,
    bwrap: str,
    python: str,
    hostname: str,
    agent_script: str = "main.py",
    fds: BwrapFds,
    entries: Sequence[tuple[str, str | None]],
    hidden: Sequence[str],
    cgroup_dirs: Sequence[Path] = (),
    tmpfs: TmpfsSizes | None = None,
    image: ImageView | None = None,
) -> list[str]:
    """The full bwrap command line that starts the agent as PID 1 (no secrets in it).

    `cgroup_dirs` are the sandbox's own cgroups: they replace the host's tree under
    /sys/fs/cgroup, so the sandbox sees its own limits and not its neighbours' groups.
    Every tmpfs gets a size from `tmpfs` (default: `tmpfs_sizes(None)`); `/dev` itself is made
    read-only (bwrap cannot size it), its writable part being the sized `/dev/shm` over it.

    With an `image`, the agent's own view stays as above (its Python is the host's), and the
    sandbox's view is built at `IMAGE_ROOT`, where the agent chroots everything it runs.
    """
    sizes = tmpfs or tmpfs_sizes(None)
    argv = [
        bwrap,
        "--unshare-all",  # user, pid, mount, net (loopback only), uts, ipc, cgroup
        "--as-pid-1",
        "--new-session",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_GID),
        "--hostname", hostname,
        "--cap-drop", "ALL",
        "--info-fd", str(fds.info),
    ]  # fmt: skip
    if fds.userns_block is not None:
        # The server maps the whole range; the agent keeps what it needs to use it.
        argv += ["--unshare-user", "--userns-block-fd", str(fds.userns_block)]
        for capability in IMAGE_CAPABILITIES if image is not None else AGENT_CAPABILITIES:
            argv += ["--cap-add", capability]
    if fds.seccomp is not None:
        argv += ["--seccomp", str(fds.seccomp)]
    for name, target in entries:
        if target is not None:
            argv += ["--symlink", target, "/" + name]
        else:
            argv += ["--ro-bind", "/" + name, "/" + name]
    argv += [
        "--dev", "/dev",
        "--size", str(sizes.shm), "--perms", "1777", "--tmpfs", "/dev/shm",  # noqa: S108 (the sandbox's own)
        "--remount-ro", "/dev",
        "--proc", "/proc",
        "--size", str(sizes.run), "--tmpfs", "/run",
        "--dir", AGENT_DIR,
    ]  # fmt: skip
    for name, fd in sorted(fds.agent_files.items()):
        argv += ["--ro-bind-data", str(fd), f"{AGENT_DIR}/{name}"]
    for path, fd in sorted(fds.etc_files.items()):
        argv += ["--ro-bind-data", str(fd), path]
    if image is not None:
        argv += _image_view_argv(image, fds, sizes, cgroup_dirs)
        for path in hidden:
            argv += ["--size", str(sizes.cover), "--tmpfs", path, "--remount-ro", path]
    else:
        argv += _host_view_argv(fds, entries, sizes, hidden)
        argv += _cgroup_view_argv(cgroup_dirs, sizes.cover)
    argv += [
        "--remount-ro", "/",  # bwrap's own root tmpfs: nothing may be created next to /usr
        "--chdir", "/" if image is not None else WORKSPACE,
        "--",
        # -W: Python >= 3.12 warns on every fork from a threaded process; the agent's fork only execs.
        python, "-S", "-I", "-W", "ignore::DeprecationWarning", f"{AGENT_DIR}/{agent_script}",
        "--listen-fd", str(fds.listen),
        "--log-fd", str(fds.log),
    ]  # fmt: skip
    if fds.lifeline is not None:
        argv += ["--lifeline-fd", str(fds.lifeline)]
    if image is not None:
        argv += ["--root", IMAGE_ROOT, "--user", image.user]
    return argv


def _host_view_argv(
    fds: BwrapFds, entries: Sequence[tuple[str, str | None]], sizes: TmpfsSizes, hidden: Sequence[str]
) -> list[str]:
    """The sandbox's writable dirs and mounts over the read-only host tree (no image)."""
    assert fds.workspace is not None and fds.tmp is not None and fds.home is not None
    argv = [
        "--bind-fd", str(fds.workspace), WORKSPACE,
        "--bind-fd", str(fds.tmp), "/tmp",  # noqa: S108 (the sandbox's own private /tmp)
        "--size", str(sizes.cover), "--tmpfs", "/home",
        "--bind-fd", str(fds.home), SANDBOX_HOME,
    ]  # fmt: skip
    shadows = shadow_dirs([sandbox_path for _fd, sandbox_path, _ro in fds.mounts], entries)
    for directory in shadows:
        argv += _shadow_argv(directory, sizes.cover)
    for fd, sandbox_path, read_only in fds.mounts:
        argv += ["--ro-bind-fd" if read_only else "--bind-fd", str(fd), sandbox_path]
    for directory in shadows:
        argv += ["--remount-ro", directory]
    for path in hidden:
        argv += ["--size", str(sizes.cover), "--tmpfs", path, "--remount-ro", path]
    return argv


def _image_view_argv(
    image: ImageView, fds: BwrapFds, sizes: TmpfsSizes, cgroup_dirs: Sequence[Path]
) -> list[str]:
    """The sandbox's own view at `IMAGE_ROOT`: the image's root, fresh /dev and /proc, the host's
    /sys read-only (with its own cgroups only), the files written for it, the spec's mounts."""
    root = IMAGE_ROOT
    argv = [
        "--bind", image.source, root,
        "--dev", f"{root}/dev",
        "--size", str(sizes.shm), "--perms", "1777", "--tmpfs", f"{root}/dev/shm",  # noqa: S108
        "--remount-ro", f"{root}/dev",
        "--proc", f"{root}/proc",
    ]  # fmt: skip
    if os.path.isdir("/sys"):
        argv += ["--ro-bind", "/sys", f"{root}/sys"]
        argv += _cgroup_view_argv(cgroup_dirs, sizes.cover, under=root)
    for path, fd in sorted(image.etc_files.items()):
        argv += ["--bind-data", str(fd), root + path]
    for fd, sandbox_path, read_only in fds.mounts:
        argv += ["--ro-bind-fd" if read_only else "--bind-fd", str(fd), root + sandbox_path]
    return argv
