"""The shared watchdog on its own, with items that record when they were looked at."""

from __future__ import annotations

import math

import attrs
import structlog.testing
import trio
import trio.testing

from amqprouter.session.watch import MIN_INTERVAL, Watchdog


@attrs.define(eq=False)
class Item:
    """Asks to be looked at again after each of ``intervals`` (then stops)."""

    intervals: list[float]
    seen: list[float] = attrs.Factory(list)
    fail: bool = False

    def watch_check(self, now: float) -> float | None:
        self.seen.append(now)
        if self.fail:
            raise RuntimeError("broken item")
        return now + self.intervals.pop(0) if self.intervals else None


async def test_items_are_looked_at_when_they_say_then_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    watchdog = Watchdog(trio.current_time)
    nursery.start_soon(watchdog.run)
    start = trio.current_time()
    a = Item([5.0, 1.0])
    b = Item([0.5])
    watchdog.watch(a, start + 2)
    watchdog.watch(b, start + 3)
    assert len(watchdog) == 2
    await trio.sleep(100)
    assert [t - start for t in a.seen] == [2, 7, 8]
    assert [t - start for t in b.seen] == [3, 3.5]
    assert len(watchdog) == 0


async def test_an_earlier_item_wakes_a_sleeping_watchdog(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    watchdog = Watchdog(trio.current_time)
    nursery.start_soon(watchdog.run)
    start = trio.current_time()
    late, early = Item([]), Item([])
    watchdog.watch(late, start + 1000)
    await trio.testing.wait_all_tasks_blocked()  # the watchdog sleeps until +1000
    watchdog.watch(early, start + 1)
    await trio.sleep(2)
    assert [t - start for t in early.seen] == [1]
    assert late.seen == []


async def test_forgotten_items_are_never_looked_at_and_swept_out(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    watchdog = Watchdog(trio.current_time)
    nursery.start_soon(watchdog.run)
    start = trio.current_time()
    items = [Item([]) for _ in range(300)]
    handles = [watchdog.watch(item, start + 100 + n) for n, item in enumerate(items)]
    for handle in handles[:200]:
        watchdog.forget(handle)
        watchdog.forget(handle)  # twice is harmless
    # Swept once they were the majority: an ended session is not kept alive.
    assert len(watchdog._heap) < 300
    assert len(watchdog) == 100
    await trio.sleep(1000)
    assert all(item.seen == [] for item in items[:200])
    assert all(len(item.seen) == 1 for item in items[200:])
    assert len(watchdog) == 0


async def test_a_failing_item_is_logged_and_dropped_the_rest_go_on(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    watchdog = Watchdog(trio.current_time)
    nursery.start_soon(watchdog.run)
    start = trio.current_time()
    broken, fine = Item([1.0], fail=True), Item([1.0])
    with structlog.testing.capture_logs() as logs:
        watchdog.watch(broken, start + 1)
        watchdog.watch(fine, start + 1)
        await trio.sleep(10)
    assert len(broken.seen) == 1
    assert [t - start for t in fine.seen] == [1, 2]
    assert [e["event"] for e in logs] == ["watchdog check failed"]


async def test_an_item_naming_a_past_time_does_not_spin_the_watchdog(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    watchdog = Watchdog(trio.current_time)
    nursery.start_soon(watchdog.run)
    start = trio.current_time()
    stubborn = Item([-math.inf] * 1000)
    watchdog.watch(stubborn, start)
    await trio.sleep(1)
    assert len(stubborn.seen) <= 1 / MIN_INTERVAL + 2
