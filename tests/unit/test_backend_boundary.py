"""The API layer reaches the machine only through the backend interface (`_backend/base.py`).

`execd/` and `lifecycle/` import nothing from `_backend` but `base`, and nothing from `_agent`: so a
second backend (tests/fake_backend.py, say) serves them unchanged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import osbox.server

SERVER = Path(osbox.server.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(SERVER.parent.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_api_layer_imports_only_the_backend_interface() -> None:
    reaching: list[str] = []
    for api in ("execd", "lifecycle"):
        for path in sorted((SERVER / api).glob("*.py")):
            for module in imported_modules(path):
                inside_backend = module.startswith("osbox.server._backend.")
                if "osbox.server._agent" in module or (
                    inside_backend and not module.startswith("osbox.server._backend.base")
                ):
                    reaching.append(f"{path.relative_to(SERVER)} imports {module}")
    assert reaching == []
    assert imported_modules(SERVER / "execd" / "files.py") >= {"osbox.server._backend.base"}, (
        "the scan sees imports"
    )
