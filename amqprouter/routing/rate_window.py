"""Rate limits as plain arithmetic on a clock reading: no I/O, no trio.

* ``FixedWindow``: amqpprox's connection-rate limiter. A window of one second
  starts at the first request after the previous window expired; a request is
  allowed while fewer than ``limit`` were allowed in the window. A limit of 0
  refuses every request (amqpprox PR #87).
* ``DataBudget``: the per-connection data rate, a token bucket of a tenth of a
  second of the rate, starting full: in any span of T seconds at most rate * T bytes
  and one bucket pass (amqpprox's one-second quota windows let two quotas through in
  a little over a second). The reader asks ``allowance`` how much its next read may
  take (at most what the bucket holds), so the bucket is not overshot even with the
  router's large reads; once it is empty, the reader waits until it is full again.
  The data-rate alarm keeps amqpprox's one-second windows.
"""

from __future__ import annotations

from typing import Final

#: The length of every window, in seconds (amqpprox's is fixed at 1 s too).
WINDOW: Final = 1.0
#: A data-rate bucket holds this many seconds of its rate: the most that passes at
#: once, and what any span of time may pass over its share of the rate.
BURST_SECONDS: Final = 0.1


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
    """One connection's client→broker byte budget: ``limit`` throttles, ``alarm`` only
    reports. Either may be None (no such limit); the session drops the whole budget
    when both are.

    The limit is a token bucket of ``burst`` bytes (``burst_seconds`` of the rate, a
    tenth of a second by default: ``BURST_SECONDS``, --data-rate-burst), starting full
    and refilled at ``limit`` bytes per second. Reads are sized to what the bucket
    holds, so in any span of T seconds at most
    ``limit * T + burst`` bytes pass: in the first second, the rate and one bucket. (A
    window of one second per quota, amqpprox's, let two quotas through in a little more
    than a second: one at the end of a window, one at the start of the next.) Once the
    bucket is empty the reader waits until it is full again, so a client sending flat
    out is read a bucket (or a socket read) at a time, not a byte at a time.

    The alarm is amqpprox's: ``alarm`` bytes per one-second window, reported once per
    window the client goes over.
    """

    __slots__ = (
        "_alarm_spent",
        "_stamp",
        "_tokens",
        "_window_end",
        "alarm",
        "alarmed",
        "burst",
        "limit",
    )

    def __init__(
        self, limit: int | None, alarm: int | None, burst_seconds: float = BURST_SECONDS
    ) -> None:
        self.limit = limit
        self.alarm = alarm
        #: The bucket's size: what may pass at once after an idle spell
        #: (``burst_seconds`` of the rate: --data-rate-burst).
        self.burst = 0 if limit is None else max(1, int(limit * burst_seconds))
        #: Whether the alarm quota was ever exceeded (counted once per connection).
        self.alarmed = False
        self._tokens = float(self.burst)  # a new connection starts with a full bucket
        self._stamp = -float("inf")  # when the bucket was last refilled
        self._window_end = -float("inf")
        self._alarm_spent = 0

    def _refill(self, limit: int, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * limit)
            self._stamp = now
        return self._tokens

    def spend(self, size: int, now: float) -> tuple[float, bool]:
        """Count ``size`` bytes read at ``now``.

        Returns:
            (seconds to wait before the next read, 0.0 for none; whether this read
            first crossed the alarm quota in its window, to be logged).
        """
        crossed = False
        alarm = self.alarm
        if alarm is not None:
            if now >= self._window_end:
                self._window_end = now + WINDOW
                self._alarm_spent = 0
            before = self._alarm_spent
            self._alarm_spent = before + size
            if before <= alarm < self._alarm_spent:
                crossed = True
                self.alarmed = True
        limit = self.limit
        if limit is not None:
            left = self._refill(limit, now) - size
            self._tokens = left
            if left < 1:
                # Empty (or in debt, after a read sized before the limit was set): wait
                # until the bucket is full again.
                return (self.burst - left) / limit, crossed
        return 0.0, crossed

    def allowance(self, now: float, cap: int) -> int:
        """How many bytes the next read may take at ``now``: what the bucket holds, at
        least 1, at most ``cap``."""
        limit = self.limit
        if limit is None:
            return cap
        # The epsilon: a reader that waited exactly as told finds the bucket full even
        # when the float arithmetic lands a hair short of it.
        return max(1, min(cap, int(self._refill(limit, now) + 1e-6)))

    @property
    def inert(self) -> bool:
        """Neither a limit nor an alarm: the session drops the budget."""
        return self.limit is None and self.alarm is None
