"""Lazy package namespaces (PEP 562): a public name loads its submodule on first access.

`import osbox` then costs almost nothing, and `from osbox import LifecycleClient` loads only what the
lifecycle client needs (not the egress or execd clients and their models). The package keeps a
`TYPE_CHECKING` block importing every name, so type checkers and IDEs see them all.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs more than all of this
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose names live in submodules.

    `exports` maps a relative submodule (`"._lifecycle"`) to the names it provides:

        __getattr__, __dir__ = lazy_exports(__name__, {"._lifecycle": ["LifecycleClient"]})

    A loaded name is stored in the package, so later lookups are plain attribute reads.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
