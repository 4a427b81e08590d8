"""The router process's own figures: CPU over the last interval, current RSS, and the
``process_*`` family of /metrics (Linux: read from /proc)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Final

import attrs

_STATM: Final = Path("/proc/self/statm")
_STAT: Final = Path("/proc/self/stat")
_SYSTEM_STAT: Final = Path("/proc/stat")
_FDS: Final = Path("/proc/self/fd")
_PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024
_TICKS: Final = os.sysconf("SC_CLK_TCK")


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


@attrs.frozen
class ProcessFigures:
    """What prometheus_client's ProcessCollector exports, under the same names (without
    the ``process_`` prefix); each is None when /proc cannot tell (not Linux)."""

    start_time_seconds: float | None
    open_fds: int | None
    max_fds: int | None
    resident_memory_bytes: int | None
    virtual_memory_bytes: int | None
    cpu_seconds_total: float


def process_figures() -> ProcessFigures:
    """The process's figures now: a few small /proc reads, once per scrape."""
    cpu = os.times()
    start = vsize = rss = None
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = _STAT.read_bytes().rsplit(b")", 1)[1].split()
        # Fields 22-24 of proc(5) (starttime, vsize, rss); fields[0] is field 3.
        start_ticks, vsize, rss_pages = int(fields[19]), int(fields[20]), int(fields[21])
        rss = rss_pages * _PAGE_KB * 1024
        start = _boot_time() + start_ticks / _TICKS
    except (OSError, IndexError, ValueError):
        pass
    try:
        open_fds: int | None = len(os.listdir(_FDS))
    except OSError:
        open_fds = None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return ProcessFigures(
        start_time_seconds=start,
        open_fds=open_fds,
        max_fds=None if soft == resource.RLIM_INFINITY else soft,
        resident_memory_bytes=rss,
        virtual_memory_bytes=vsize,
        cpu_seconds_total=round(cpu.user + cpu.system, 3),
    )


def _boot_time() -> float:
    """Seconds since the epoch at boot (``btime`` in /proc/stat); ValueError if absent."""
    for line in _SYSTEM_STAT.read_bytes().splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")
