"""Temporary data dirs of ephemeral servers: locked while their process lives, swept once it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from osbox.server.tempdirs import PREFIX, TempDataDir, sweep_abandoned

#: Makes a temp data dir and exits without removing it, as a SIGKILLed server would.
_ABANDON = """
from osbox.server.tempdirs import TempDataDir
print(TempDataDir().path)
"""


def abandoned_dir() -> Path:
    done = subprocess.run([sys.executable, "-c", _ABANDON], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


def test_the_dir_of_an_ended_process_is_swept() -> None:
    directory = abandoned_dir()
    (directory / "sandboxes").mkdir()
    assert directory.is_dir()
    assert directory in sweep_abandoned()
    assert not directory.exists()


def test_a_held_dir_and_a_dir_without_a_lock_are_left_alone() -> None:
    held = TempDataDir()
    lockless = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        swept = sweep_abandoned()
        assert held.path not in swept and lockless not in swept
        assert held.path.is_dir() and lockless.is_dir()
    finally:
        held.remove()
        os.rmdir(lockless)
    assert not held.path.exists()
    held.remove()  # idempotent
