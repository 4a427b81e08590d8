"""Rate limits as plain arithmetic on a clock reading: no I/O, no trio.

* ``FixedWindow``: amqpprox's connection-rate limiter. A window of one second
  starts at the first request after the previous window expired; a request is
  allowed while fewer than ``limit`` were allowed in the window. A limit of 0
  refuses every request (amqpprox PR #87).
* ``DataBudget``: amqpprox's per-connection data-rate quota. ``quota`` bytes may
  be read per one-second window. The reader asks ``allowance`` how much its next
  read may take (at most what is left), so a window is not overshot even with the
  router's large reads; the read that exhausts the budget is forwarded whole, and
  the reader then waits until the window's end, when the budget refills. (amqpprox
  reads its whole buffer and may overshoot by one read.)
"""

from __future__ import annotations

from typing import Final

#: The length of every window, in seconds (amqpprox's is fixed at 1 s too).
WINDOW: Final = 1.0


class FixedWindow:
    """At most ``limit`` allowed requests per one-second window."""

    __slots__ = ("_count", "_start", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._start = -float("inf")
        self._count = 0

    def allow(self, now: float) -> bool:
        """Count one request at ``now``; whether it is within the limit."""
        if now - self._start >= WINDOW:
            self._start = now
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            return True
        return False

    def expired(self, now: float) -> bool:
        """Whether the window has ended: the next request starts a new one, exactly as
        it would in a new ``FixedWindow``."""
        return now - self._start >= WINDOW


class DataBudget:
    """One connection's client→broker byte quota: ``limit`` throttles, ``alarm`` only
    reports. Either may be None (no such limit); the session drops the whole budget
    when both are."""

    __slots__ = ("_alarm_spent", "_limit_spent", "_window_end", "alarm", "alarmed", "limit")

    def __init__(self, limit: int | None, alarm: int | None) -> None:
        self.limit = limit
        self.alarm = alarm
        #: Whether the alarm quota was ever exceeded (counted once per connection).
        self.alarmed = False
        self._window_end = -float("inf")
        self._limit_spent = 0
        self._alarm_spent = 0

    def spend(self, size: int, now: float) -> tuple[float, bool]:
        """Count ``size`` bytes read at ``now``.

        Returns:
            (seconds to wait before the next read, 0.0 for none; whether this read
            first crossed the alarm quota in its window, to be logged).
        """
        if now >= self._window_end:
            self._window_end = now + WINDOW
            self._limit_spent = self._alarm_spent = 0
        crossed = False
        alarm = self.alarm
        if alarm is not None:
            before = self._alarm_spent
            self._alarm_spent = before + size
            if before <= alarm < self._alarm_spent:
                crossed = True
                self.alarmed = True
        limit = self.limit
        if limit is not None:
            self._limit_spent += size
            if self._limit_spent >= limit:
                return self._window_end - now, crossed
        return 0.0, crossed

    def allowance(self, now: float, cap: int) -> int:
        """How many bytes the next read may take at ``now``: what is left of the
        window's quota (all of it in a new window), at least 1, at most ``cap``."""
        limit = self.limit
        if limit is None:
            return cap
        left = limit if now >= self._window_end else limit - self._limit_spent
        return max(1, min(cap, left))

    @property
    def inert(self) -> bool:
        """Neither a limit nor an alarm: the session drops the budget."""
        return self.limit is None and self.alarm is None
