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

A session's own check (``Supervised.watch_check``) lives here too, beside what calls
it: a peer silent for two heartbeat intervals, or a write unfinished for the write
timeout, ends forwarding as a disconnect does (the End says which), and the session
closes each peer as closing.py says.
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

from amqprouter.net.sockets import endpoint
from amqprouter.session.closing import End
from amqprouter.session.state import SessionState, State

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


class Supervised(SessionState):
    """A session's side of supervision: when it may next be overdue, and the check."""

    __slots__ = ()

    def _watch_step(self) -> float:
        """The shortest time in which this session can become overdue."""
        heartbeat = self._heartbeat
        silence = 2.0 * heartbeat if heartbeat > 0 else math.inf
        return min(silence, self.settings.timeouts.write_for(heartbeat))

    def watch_check(self, now: float) -> float | None:
        """The watchdog's look at a forwarding session (``now``: the watchdog's clock).

        Ends the session if a peer is overdue: silent for two heartbeat intervals (only
        judged while its pump is reading it), or not taking a write for the write
        timeout. Returns when to look again (None: stop). Paused sessions are not
        judged on the client side (the hold reads their client on purpose, or not at
        all), nor is a write to a broker that said Connection.Blocked.
        """
        if self._forwarding is None or self.state is not State.OPEN:
            return None
        if self._pending_end is not None:
            return None
        assert self.broker is not None
        heartbeat = self._heartbeat
        silence = 2.0 * heartbeat if heartbeat > 0 else math.inf
        write = self.settings.timeouts.write_for(heartbeat)
        # A write that starts later is read later: it cannot be overdue before this.
        later_write = now + write
        # Client → broker: the ingress pump reads the client and writes the broker.
        since = max(self.last_ingress, self._watch_since)
        if self._pause is not None or (self._blocked and self.broker in self._writing):
            next_ingress = now + min(silence, write)
        elif self.broker in self._writing:
            if now - since >= write:
                self._overdue(End.BROKER_STUCK, now - since, write)
                return None
            next_ingress = since + write
        else:
            if now - since >= silence:
                self._overdue(End.CLIENT_SILENT, now - since, write)
                return None
            next_ingress = min(since + silence, later_write)
        # Broker → client: the egress pump reads the broker and writes the client.
        since = self.last_egress
        if self.client in self._writing:
            if now - since >= write:
                self._overdue(End.CLIENT_STUCK, now - since, write)
                return None
            next_egress = since + write
        else:
            if now - since >= silence:
                self._overdue(End.BROKER_SILENT, now - since, write)
                return None
            next_egress = min(since + silence, later_write)
        return min(next_ingress, next_egress)

    def _overdue(self, end: End, seconds: float, write: float) -> None:
        """End forwarding for a supervision ``end``; ``_finish`` tells the peers."""
        assert self.backend is not None and self._forwarding is not None
        who = (
            f"broker {self.backend.label}"
            if end in (End.BROKER_SILENT, End.BROKER_STUCK)
            else f"client {endpoint(self.client_address)}"
        )
        if end in (End.BROKER_SILENT, End.CLIENT_SILENT):
            what = f"sent nothing for {seconds:.0f}s (heartbeat {self._heartbeat}s)"
        else:
            what = f"did not read for {seconds:.0f}s (write timeout {write:g}s)"
        self._pending_end, self.end_reason = end, f"{who} {what}"
        self.log.warning("peer overdue", reason=end.value, detail=self.end_reason)
        self._forwarding.cancel()
