"""Host-wide network layout claims (`hostslots`): distinct per running server, taken over after a crash."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from osbox.server.egress.hostslots import LayoutTaken, claim_layout

CLAIM_AND_WAIT = """
import sys
from pathlib import Path
from osbox.server.egress.hostslots import claim_layout
claim = claim_layout(None, None, registry=Path(sys.argv[1]), owner="the child")
print(claim.prefix, claim.pool, flush=True)
sys.stdin.read()
"""


def test_servers_get_distinct_slots_and_a_released_one_is_free_again(tmp_path: Path) -> None:
    first = claim_layout(None, None, registry=tmp_path)
    second = claim_layout(None, None, registry=tmp_path)
    assert (first.prefix, first.pool) == ("osbx", IPv4Network("100.96.0.0/16"))
    assert (second.prefix, second.pool) == ("osbx1", IPv4Network("100.97.0.0/16"))
    first.release()
    again = claim_layout(None, None, registry=tmp_path)
    assert again.prefix == "osbx"
    again.release()
    second.release()


def test_a_taken_prefix_or_an_overlapping_pool_is_refused_saying_by_whom(tmp_path: Path) -> None:
    held = claim_layout("mine", IPv4Network("10.200.0.0/16"), registry=tmp_path, owner="pid 1, /srv/a")
    try:
        with pytest.raises(LayoutTaken, match=r"mine \(10.201.0.0/16\): held by pid 1, /srv/a"):
            claim_layout("mine", IPv4Network("10.201.0.0/16"), registry=tmp_path)
        with pytest.raises(LayoutTaken, match="held by pid 1"):
            claim_layout("other", IPv4Network("10.200.128.0/17"), registry=tmp_path)
        # A free prefix with the default pools skips the overlapping ones: here none overlaps.
        free = claim_layout("other", None, registry=tmp_path)
        assert free.pool == IPv4Network("100.96.0.0/16")
        free.release()
    finally:
        held.release()


def test_the_claim_of_a_killed_server_is_taken_over_and_its_preferred_slot_found(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_WAIT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["osbx", "100.96.0.0/16"]
        with pytest.raises(LayoutTaken, match="held by the child"):
            claim_layout("osbx", None, registry=tmp_path)
        unrelated = claim_layout(None, None, registry=tmp_path)
        assert unrelated.prefix == "osbx1"
    finally:
        child.kill()
        child.wait()
    # Its restart prefers the slot it had, which the crash left stale: taken over (and then swept by
    # `HostNetwork.start`, see test_hostnet's crash test).
    restarted = claim_layout(None, None, preferred="osbx", registry=tmp_path)
    assert restarted.prefix == "osbx"
    restarted.release()
    assert sorted(p.name for d in tmp_path.iterdir() for p in d.iterdir()) == [".lock", "osbx1.claim"]
    unrelated.release()
    assert list(tmp_path.iterdir()) == []  # the namespace's directory went with its last claim


def test_a_claim_sweeps_the_directories_of_namespaces_whose_servers_are_gone(tmp_path: Path) -> None:
    # Two other namespaces' directories: one whose server crashed (its claim stale), one whose server
    # runs (its claim locked, here by another open file of this process).
    stale, live = tmp_path / "4-dead", tmp_path / "4-alive"
    for directory in (stale, live):
        directory.mkdir()
        (directory / ".lock").touch()
        (directory / "osbx.claim").write_text('{"pool": "100.96.0.0/16", "owner": "gone"}')
    held = os.open(live / "osbx.claim", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        mine = claim_layout(None, None, registry=tmp_path)
        assert mine.directory is not None
        assert sorted(d.name for d in tmp_path.iterdir()) == sorted(["4-alive", mine.directory.name])
        assert sorted(p.name for p in live.iterdir()) == [".lock", "osbx.claim"]
        mine.release()
        assert [d.name for d in tmp_path.iterdir()] == ["4-alive"]
    finally:
        os.close(held)
    # Its server gone too, the next claim's sweep takes it; the releases leave nothing.
    claim_layout(None, None, registry=tmp_path).release()
    assert list(tmp_path.iterdir()) == []
