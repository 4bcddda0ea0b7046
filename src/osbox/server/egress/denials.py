"""Which denials become diagnostics events: a sandbox can ask for a denied name thousands of times a
second, and each event is a database row. Pure: the caller passes the time."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DenialThrottle"]


class DenialThrottle:
    """Records a target at most once per `repeat_after` seconds, and at most `per_minute` denials a minute.

    Example::

        throttle = DenialThrottle()
        if throttle.admit("denied.test", time.monotonic()):
            record_event(...)
    """

    def __init__(self, *, repeat_after: float = 10.0, per_minute: int = 120, remembered: int = 4096) -> None:
        """Defaults: a target repeats after 10 s; 120 events a minute; 4096 recent targets remembered."""
        self._repeat_after = repeat_after
        self._per_minute = per_minute
        self._remembered = remembered
        self._last_seen: OrderedDict[str, float] = OrderedDict()
        self._window_start = float("-inf")
        self._in_window = 0
        self.suppressed = 0
        """Denials not recorded so far (repeats and those over the rate)."""

    def admit(self, target: str, now: float) -> bool:
        """Whether this denial of `target` at `now` (seconds, monotonic) should be recorded."""
        last = self._last_seen.get(target)
        if last is not None and now - last < self._repeat_after:
            self.suppressed += 1
            return False
        if now - self._window_start >= 60.0:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self._per_minute:
            self.suppressed += 1
            return False
        self._in_window += 1
        self._last_seen[target] = now
        self._last_seen.move_to_end(target)
        while len(self._last_seen) > self._remembered:
            self._last_seen.popitem(last=False)
        return True
