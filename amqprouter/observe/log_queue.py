"""Writing log lines without blocking the caller: a bounded queue and a writer thread.

Each sink (stderr, the log files) gets its own queue and thread, so a stuck one (a
full stderr pipe nobody reads, a slow disk) cannot hold up the other or the trio
thread that forwards AMQP traffic. When a queue is full the line is dropped and
counted; the next line that finds room is preceded by a notice saying how many were
lost (amqpprox drops silently).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, Protocol, TextIO

#: Lines waiting per sink before new ones are dropped (amqpprox: 4096 records).
DEFAULT_MAX_QUEUED: Final = 4096
#: On exit, how long to wait for a sink to write what is queued.
STOP_TIMEOUT: Final = 5.0
#: The writer wakes this often to write what has queued up (or sooner, when a quarter
#: of the queue is used). Waking it for every line cost the trio thread about 100 µs
#: a line in GIL hand-offs and thread switches (measured: 600 µs per AMQP connection
#: at INFO); a line now reaches its sink at most this late.
FLUSH_INTERVAL: Final = 0.1


class Sink(Protocol):
    def write_lines(self, lines: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """A text stream, stderr by default."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write_lines(self, lines: Iterable[str]) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()

    def close(self) -> None:
        pass  # stderr stays open for the process's last words


class QueuedSink:
    """Lines at or above ``level`` go to ``sink`` on a thread of their own.

    ``emit`` never blocks on the sink: it appends to a bounded queue, or counts a drop.
    ``drop_notice(n)`` renders the line announcing ``n`` dropped lines.
    """

    def __init__(
        self,
        sink: Sink,
        level: int,
        *,
        drop_notice: Callable[[int], str],
        max_queued: int = DEFAULT_MAX_QUEUED,
        name: str = "log-writer",
    ) -> None:
        self.sink = sink
        self.level = level
        self.max_queued = max_queued
        #: Lines lost so far (queue full or the sink failing), for tests and statistics.
        self.dropped_total = 0
        self._drop_notice = drop_notice
        self._lines: deque[str] = deque()
        self._wake_at = max(1, max_queued // 4)
        self._dropped = 0  # since the last notice
        self._stopping = False
        self._ready = threading.Condition(threading.Lock())
        # A daemon: a sink stuck for good (stderr never read) must not keep the process.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Lines queued and not yet taken by the writer."""
        return len(self._lines)

    def emit(self, level: int, line: str) -> None:
        if level < self.level:
            return
        with self._ready:
            if self._stopping:
                return
            # The notice needs a slot of its own, before the line it precedes.
            room = self.max_queued - len(self._lines) - (1 if self._dropped else 0)
            if room <= 0:
                self._dropped += 1
                self.dropped_total += 1
                return
            if self._dropped:
                self._lines.append(self._drop_notice(self._dropped))
                self._dropped = 0
            self._lines.append(line)
            if len(self._lines) >= self._wake_at:
                self._ready.notify()

    def close(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Write what is queued, stop the thread, close the sink; False if it was stuck."""
        with self._ready:
            if self._dropped:
                self._lines.append(self._drop_notice(self._dropped))
                self._dropped = 0
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self.sink.close()
        return True

    def _run(self) -> None:
        while True:
            with self._ready:
                # Lines are written a flush interval at a time, not one by one (see
                # FLUSH_INTERVAL); a quarter-full queue or close() wakes the writer early.
                if not self._stopping and len(self._lines) < self._wake_at:
                    self._ready.wait(FLUSH_INTERVAL)
                if not self._lines:
                    if self._stopping:
                        return  # everything is written
                    continue
                batch = list(self._lines)
                self._lines.clear()
            try:
                self.sink.write_lines(batch)
            except (OSError, ValueError):  # a full disk, a closed stream: count, go on
                with self._ready:
                    self._dropped += len(batch)
                    self.dropped_total += len(batch)
