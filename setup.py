"""Builds osbox's optional C extension; everything else about the package is in pyproject.toml.

`osbox._speedups` cuts runs of command output out of a stream (see `osbox/_decoder.py`). Where no C
compiler is at hand, osbox installs without it and uses the pure-Python cutter, unless
`OSBOX_REQUIRE_SPEEDUPS` is set (the project's own `make install` sets it, so CI cannot silently
test the fallback only).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """`build_ext` that warns instead of failing when the extension cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if os.environ.get("OSBOX_REQUIRE_SPEEDUPS"):
            raise exc
        print(f"warning: osbox._speedups not built ({exc}); osbox uses its pure-Python stream cutter")


setup(
    ext_modules=[
        Extension(
            "osbox._speedups",
            ["src/osbox/_speedups.c"],
            extra_compile_args=[] if os.name == "nt" else ["-O3"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
