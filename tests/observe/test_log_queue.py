"""The writer thread: the caller never waits for a sink; overflow is dropped and counted."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable

from amqprouter.observe.log_queue import QueuedSink, StreamSink

#: Bound for a test waiting on the writer thread (it normally takes microseconds).
WAIT = 10.0


class StuckSink:
    """A sink whose writes wait until the test lets them through (a disk that hangs)."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def write_lines(self, lines: Iterable[str]) -> None:
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the sink"
        self.written += lines

    def close(self) -> None:
        self.closed = True


class FailingOnceSink(StuckSink):
    def write_lines(self, lines: Iterable[str]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            raise OSError(28, "No space left on device")
        self.written += lines


def _wait_until(predicate: Callable[[], bool]) -> None:
    """Poll, bounded, for what the writer thread does next."""
    stop = threading.Event()
    for _attempt in range(int(WAIT / 0.01)):
        if predicate():
            return
        stop.wait(0.01)
    raise AssertionError("the writer thread did not get there")


def _notice(dropped: int) -> str:
    return f"dropped={dropped}"


def test_a_stuck_sink_does_not_hold_the_caller_and_drops_are_counted() -> None:
    sink = StuckSink()
    queued = QueuedSink(sink, 0, drop_notice=_notice, max_queued=100)
    queued.emit(20, "first")
    assert sink.entered.wait(WAIT)  # the writer holds "first", stuck in the sink
    # The sink writes nothing meanwhile, yet every emit returns: 100 queue, 50 drop.
    for number in range(150):
        queued.emit(20, f"line {number}")
    assert not sink.written
    assert queued.dropped_total == 50
    sink.release.set()
    _wait_until(lambda: queued.waiting == 0)
    queued.emit(20, "after")  # finds room now that the writer took the queue
    assert queued.close()
    assert sink.written == [
        "first",
        *(f"line {number}" for number in range(100)),
        "dropped=50",
        "after",
    ]
    assert sink.closed


def test_the_notice_waits_for_room_of_its_own() -> None:
    sink = StuckSink()
    queued = QueuedSink(sink, 0, drop_notice=_notice, max_queued=2)
    queued.emit(20, "first")
    assert sink.entered.wait(WAIT)
    for line in ("a", "b", "c"):
        queued.emit(20, line)
    # Full: one slot would be the notice's, so "d" is dropped too.
    queued.emit(20, "d")
    assert queued.dropped_total == 2
    sink.release.set()
    assert queued.close()
    assert sink.written == ["first", "a", "b", "dropped=2"]


def test_lines_below_the_level_are_not_queued() -> None:
    stream = io.StringIO()
    queued = QueuedSink(StreamSink(stream), 20, drop_notice=_notice)
    queued.emit(10, "debug")
    queued.emit(20, "info")
    queued.emit(50, "critical")
    queued.level = 50
    queued.emit(40, "error")
    assert queued.close()
    assert stream.getvalue() == "info\ncritical\n"
    assert queued.dropped_total == 0


def test_a_failing_sink_counts_its_lost_lines_and_goes_on() -> None:
    sink = FailingOnceSink()
    queued = QueuedSink(sink, 0, drop_notice=_notice)
    queued.emit(20, "lost")
    assert sink.entered.wait(WAIT)
    _wait_until(lambda: queued.dropped_total == 1)  # counted after the failed write
    queued.emit(20, "kept")
    assert queued.close()
    assert queued.dropped_total == 1
    assert sink.written == ["dropped=1", "kept"]


def test_close_gives_up_on_a_stuck_sink_and_writes_nothing_after() -> None:
    sink = StuckSink()
    queued = QueuedSink(sink, 0, drop_notice=_notice)
    queued.emit(20, "first")
    assert sink.entered.wait(WAIT)
    assert not queued.close(timeout=0.05)  # the writer is still inside write_lines
    assert not sink.closed
    queued.emit(20, "after close")  # ignored, not queued
    sink.release.set()
    queued._thread.join(WAIT)
    assert sink.written == ["first"]
