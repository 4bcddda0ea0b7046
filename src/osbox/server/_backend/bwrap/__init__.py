"""The bubblewrap backend: each sandbox a bubblewrap process tree as its own unprivileged host uid
range, with cgroup limits, a seccomp filter, a loop-mounted ext4 disk and the in-sandbox agent as
PID 1 (`backend.py` for the `Backend`, `sandbox.py` for the `SandboxHandle`)."""

from __future__ import annotations

from .backend import UID_BASE, BwrapBackend, BwrapProcess, BwrapSandbox

__all__ = ["UID_BASE", "BwrapBackend", "BwrapProcess", "BwrapSandbox"]
