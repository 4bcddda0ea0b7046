"""Hypothesis strategies for hostile layouts: trees a sandbox builds to trap the root server.

A layout is a short list of entries (directories, files, FIFOs and, most often, symlinks) under a
root inside the sandbox. Symlink targets aim at the host canary and the server's data dir (by
absolute path, through `/proc/self/root`, by climbing with `..`), at `/etc`, at other entries of
the same layout (chains and loops), and back into the sandbox's own tree. `{canary}`, `{data}` and
`{root}` in a target are replaced by those paths when the layout is built.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = ["Entry", "build_script", "kernel_layouts", "layouts", "relative_paths"]

#: Few names, so that generated paths run into each other: chains, loops, dirs under links.
NAMES = ("a", "b", "kernels", "..")
HOST_TARGETS = (
    "{canary}",
    "{canary}/sub",
    "{canary}/file",
    "{canary}/private",
    "{canary}/private/host.sock",
    "{data}",
    "{data}/osbox.db",
    "{data}/volumes",
    "/etc",
    "/",
    "/proc/self/root{canary}",
    "/proc/1/root/etc",
)

relative_paths = st.lists(st.sampled_from(NAMES[:3]), min_size=1, max_size=3).map("/".join)
#: Paths as a caller might send them: with `..` and `.` segments, doubled slashes.
probe_paths = st.lists(st.sampled_from((*NAMES, ".", "")), min_size=1, max_size=4).map("/".join)


@dataclass(frozen=True)
class Entry:
    """One thing to make at `path` (relative to the layout's root)."""

    path: str
    kind: str  # "dir" | "file" | "fifo" | "symlink"
    target: str = ""


def _climb(ups: int, rest: str) -> str:
    return "../" * ups + rest


targets = st.one_of(
    st.sampled_from(HOST_TARGETS),
    relative_paths,  # another entry: chains, loops
    st.builds(_climb, st.integers(1, 6), relative_paths),
    st.builds(_climb, st.integers(1, 8), st.sampled_from(("etc", "tmp", "var"))),
    relative_paths.map(lambda rest: "{root}/" + rest),  # back into the sandbox's own tree
)
entries = st.builds(
    Entry, relative_paths, st.sampled_from(("dir", "file", "fifo", "symlink", "symlink", "symlink")), targets
)
layouts = st.lists(entries, min_size=1, max_size=8)
#: Layouts under `/tmp/.osbox` aimed at a code context's kernel directory.
kernel_layouts = st.lists(
    st.builds(
        Entry,
        st.one_of(st.just("kernels"), relative_paths.map(lambda rest: "kernels/" + rest)),
        st.sampled_from(("dir", "file", "fifo", "symlink", "symlink")),
        targets,
    ),
    min_size=1,
    max_size=5,
)


def build_script(root: str, layout: Sequence[Entry], paths: Mapping[str, str]) -> str:
    """A shell script that (re)makes `layout` under `root`, ignoring what the layout makes fail.

    `paths` fills in `{canary}` and `{data}`; `{root}` is `root`. A file is never written through
    an existing entry (a FIFO there would block the shell).
    """
    fill = {**paths, "root": root}
    q = shlex.quote
    lines = [f"rm -rf {q(root)}", f"mkdir -p {q(root)}", f"cd {q(root)} || exit 1"]
    for entry in layout:
        path, parent = q(entry.path), q(posixpath.dirname(entry.path) or ".")
        if entry.kind == "dir":
            command = f"mkdir -p {path}"
        elif entry.kind == "file":
            command = f"mkdir -p {parent} && [ ! -e {path} ] && [ ! -L {path} ] && printf hostile > {path}"
        elif entry.kind == "fifo":
            command = f"mkdir -p {parent} && mkfifo {path}"
        else:
            command = f"mkdir -p {parent} && ln -sfn {q(entry.target.format(**fill))} {path}"
        lines.append(f"({command}) 2>/dev/null")
    lines.append("true")
    return "\n".join(lines)
