"""The router process's own figures: CPU over the last interval and current RSS."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Final

import attrs

_STATM: Final = Path("/proc/self/statm")
_PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024


@attrs.frozen
class ProcessStats:
    """amqpprox's process stats (JSON names in ``FIELDS``); percentages are rounded.

    ``mem_rss_kb`` is the *current* resident set (amqpprox reports the peak).
    """

    cpu_percent_overall: int = 0
    cpu_percent_user: int = 0
    cpu_percent_system: int = 0
    mem_rss_kb: int = 0

    FIELDS: ClassVar[tuple[str, ...]] = (
        "cpu_percent_overall",
        "cpu_percent_user",
        "cpu_percent_system",
        "mem_rss_kb",
    )

    def items(self) -> list[tuple[str, int]]:
        return [(name, getattr(self, name)) for name in self.FIELDS]


def current_rss_kb() -> int:
    """Resident memory now, in KiB (/proc/self/statm's second field is pages)."""
    try:
        return int(_STATM.read_bytes().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


class ProcessSampler:
    """CPU percentages between two calls of ``sample``; the first call reports 0 CPU."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        times: Callable[[], os.times_result] = os.times,
        rss_kb: Callable[[], int] = current_rss_kb,
    ) -> None:
        self._clock, self._times, self._rss_kb = clock, times, rss_kb
        self._previous: tuple[float, float, float] | None = None

    def sample(self) -> ProcessStats:
        now, cpu = self._clock(), self._times()
        previous, self._previous = self._previous, (now, cpu.user, cpu.system)
        rss = self._rss_kb()
        if previous is None or now <= previous[0]:
            return ProcessStats(mem_rss_kb=rss)
        wall = now - previous[0]
        user = (cpu.user - previous[1]) / wall * 100
        system = (cpu.system - previous[2]) / wall * 100
        return ProcessStats(round(user + system), round(user), round(system), rss)
