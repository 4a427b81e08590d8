"""One watchdog for all sessions: when to look at each again, in one heap.

Heartbeat supervision must cost nothing per read: the pumps only record when each
direction last carried data (``Session.last_ingress``/``last_egress``, which CONN
shows anyway). From those, a session can say when it might next be overdue at the
earliest; the watchdog keeps one heap entry per watched session keyed by that time
and, when it comes, asks the session to check itself. Traffic since then only moves
the session's real deadline later, so the session either acts (it is overdue) or
names its next time to be looked at. An idle session costs one heap entry, not a
task: a task per session would cost more memory than the rest of an idle session.

Times are the ``clock``'s (``time.monotonic``, as the sessions record them); the
watchdog sleeps on trio's clock for the same interval.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Final, Protocol

import structlog
import trio

log = structlog.get_logger("amqprouter.session")

#: The soonest an item is looked at again, whatever it asks: a check that keeps
#: naming a time already past must not spin the watchdog.
MIN_INTERVAL: Final = 0.05


class Watched(Protocol):
    def watch_check(self, now: float) -> float | None:
        """Act if overdue at ``now``; return when to check again, or None to stop."""
        ...


class Handle:
    """One watched item's place in the heap; ``Watchdog.forget`` takes it out."""

    __slots__ = ("at", "item", "order")

    def __init__(self, at: float, order: int, item: Watched) -> None:
        self.at = at
        self.order = order
        self.item: Watched | None = item

    def __lt__(self, other: Handle) -> bool:
        return (self.at, self.order) < (other.at, other.order)


class Watchdog:
    """Checks each watched item when the time it named comes; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[Handle] = []
        self._order = itertools.count()  # equal times are taken in the order they came
        self._forgotten = 0  # handles still in the heap whose item is gone
        self._sleep: trio.CancelScope | None = None
        self._sleep_until = math.inf

    def __len__(self) -> int:
        """Items watched now."""
        return len(self._heap) - self._forgotten

    def watch(self, item: Watched, at: float) -> Handle:
        """Check ``item`` at ``at`` (clock time), and then as it says."""
        handle = Handle(at, next(self._order), item)
        heapq.heappush(self._heap, handle)
        if at < self._sleep_until and self._sleep is not None:
            self._sleep_until = at
            self._sleep.deadline = trio.current_time() + (at - self.clock())
        return handle

    def forget(self, handle: Handle) -> None:
        """Stop watching (a session that ended): it is not kept alive until its time."""
        if handle.item is None:
            return
        handle.item = None
        self._forgotten += 1
        # Dropped handles cost a few dozen bytes each until their time comes; under
        # heavy churn with long heartbeats, sweep them out once they are the majority.
        if self._forgotten > 64 and self._forgotten * 2 > len(self._heap):
            self._heap[:] = [h for h in self._heap if h.item is not None]
            heapq.heapify(self._heap)
            self._forgotten = 0

    async def run(self) -> None:
        """Serve until cancelled."""
        heap = self._heap
        while True:
            now = self.clock()
            while heap and heap[0].at <= now:
                handle = heapq.heappop(heap)
                item = handle.item
                if item is None:
                    self._forgotten -= 1
                    continue
                try:
                    again = item.watch_check(now)
                except Exception:  # one broken item must not end supervision for all
                    log.exception("watchdog check failed", item=repr(item))
                    again = None
                if again is None:
                    handle.item = None
                    continue
                handle.at = max(again, now + MIN_INTERVAL)
                handle.order = next(self._order)
                heapq.heappush(heap, handle)
            self._sleep_until = heap[0].at if heap else math.inf
            deadline = trio.current_time() + (self._sleep_until - now)
            with trio.CancelScope(deadline=deadline) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
