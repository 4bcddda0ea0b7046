"""Platforms (os/architecture[/variant]) in OCI's vocabulary, and this machine's."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

__all__ = ["Platform", "host_platform"]

#: `uname -m` -> (OCI architecture, variant).
_MACHINE_TO_OCI = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: `os` and `architecture` as in image configs and index entries."""

    os: str
    architecture: str
    variant: str | None = None

    def as_oci(self) -> dict[str, str]:
        """The `platform` object of an OCI index entry."""
        fields = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            fields["variant"] = self.variant
        return fields

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


def host_platform() -> Platform:
    """This machine's platform (what a pull picks from a multi-arch index by default)."""
    machine = _platform.machine().lower()
    architecture, variant = _MACHINE_TO_OCI.get(machine, (machine, None))
    return Platform("linux", architecture, variant)
