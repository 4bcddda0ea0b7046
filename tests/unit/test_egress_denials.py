"""The denial throttle: repeats and floods of denied names don't become floods of events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from osbox.server.egress.denials import DenialThrottle


def test_a_target_is_recorded_again_only_after_the_repeat_interval() -> None:
    throttle = DenialThrottle(repeat_after=10)
    assert throttle.admit("denied.test", 0.0)
    assert not throttle.admit("denied.test", 9.9)
    assert throttle.admit("other.test", 9.9)
    assert throttle.admit("denied.test", 10.0)
    assert throttle.suppressed == 1


def test_at_most_per_minute_events_whatever_the_targets() -> None:
    throttle = DenialThrottle(per_minute=3)
    assert [throttle.admit(f"n{i}.test", 1.0) for i in range(5)] == [True, True, True, False, False]
    assert throttle.admit("n9.test", 61.0)
    assert throttle.suppressed == 2


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.floats(0, 1)), max_size=200))
def test_never_more_than_the_rate_and_memory_stays_bounded(denials: list[tuple[str, float]]) -> None:
    throttle = DenialThrottle(per_minute=5, remembered=2)
    now = 0.0
    seen = recorded = 0
    for target, step in denials:
        now += step
        if now >= 60:
            break
        seen += 1
        recorded += throttle.admit(target, now)
        assert len(throttle._last_seen) <= 2
    assert recorded <= 5
    assert recorded + throttle.suppressed == seen
