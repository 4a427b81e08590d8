"""Sticky clients: ``FARM STICKY farm ON [seconds]``.

For a sticky farm, a client address keeps the member its sessions landed on: while
that member may be chosen (up, enabled, not drained, allowed by the client's rule)
the client's new sessions go there first, and the entry lives as long as the client
has a session on the farm and ``timeout`` seconds after its last one ends. A member
that is down, disabled or drained is not kept: the selector chooses again and the
entry moves to wherever the session lands.

``StickyTable`` is that memory: (farm, client address) → ``Entry``, mutable and shared
by every snapshot (``RoutingTable.sticky``), like the selectors' state; one trio
thread uses it. Its clock is injectable (monotonic seconds). ``export``/``restore``
turn it into plain records with wall-clock expiry times and back, for
``--sticky-file`` (written by ``server.sticky_file``: the file I/O is not here).

Bounded: at most ``MAX_ENTRIES`` entries (expired ones are swept every
``SWEEP_EVERY`` new entries and whenever it is full); when it is full of live entries
a new client is simply not remembered (routed by the selector, as without STICKY).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

#: STICKY ON without seconds: how long a client keeps its member after its last
#: session ends (long enough to ride over a client's reconnect loop or a deploy).
DEFAULT_SECONDS: Final = 300.0
#: The longest STICKY timeout (a day): longer is a static mapping's job.
MAX_SECONDS: Final = 86_400.0
#: Entries at most (one per farm and client address); ~200 bytes each.
MAX_ENTRIES: Final = 100_000
#: New entries between two sweeps of the expired ones.
SWEEP_EVERY: Final = 1024

Key = tuple[str, str]


@attrs.define
class Entry:
    """A client's member on one farm, its live sessions there and when it expires."""

    backend: str
    timeout: float
    sessions: int = 0
    #: Monotonic time the entry ends; None while the client has sessions.
    expires: float | None = None


class StickyTable:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_ENTRIES
    ) -> None:
        self._clock = clock
        self._entries: dict[Key, Entry] = {}
        self._max = max_entries
        self._added = 0
        #: Bumped by every change worth saving (an entry added, moved, expired or
        #: ended), so a writer knows when the table differs from its file.
        self.changes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def member(self, farm: str, client: str) -> str | None:
        """The member ``client`` keeps on ``farm``, or None (none, or expired)."""
        entry = self._entries.get((farm, client))
        if entry is None:
            return None
        if entry.expires is not None and self._clock() >= entry.expires:
            del self._entries[(farm, client)]
            self.changes += 1
            return None
        return entry.backend

    def attach(self, farm: str, client: str, backend: str, timeout: float) -> bool:
        """A session of ``client`` landed on ``backend`` of sticky ``farm``: the client
        keeps it (while it has sessions, then ``timeout`` s). False: not remembered
        (the table is full of live entries)."""
        key = (farm, client)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max or self._added >= SWEEP_EVERY:
                self.sweep()
                if len(self._entries) >= self._max:
                    return False
            self._added += 1
            entry = self._entries[key] = Entry(backend, timeout)
            self.changes += 1
        elif entry.backend != backend or entry.expires is not None:
            entry.backend = backend
            self.changes += 1
        entry.timeout = timeout
        entry.sessions += 1
        entry.expires = None
        return True

    def detach(self, farm: str, client: str) -> None:
        """One of ``client``'s sessions on ``farm`` ended; after its last one, the entry
        lasts its timeout more."""
        entry = self._entries.get((farm, client))
        if entry is None or entry.sessions <= 0:
            return
        entry.sessions -= 1
        if entry.sessions == 0:
            entry.expires = self._clock() + entry.timeout
            self.changes += 1

    def sweep(self) -> int:
        """Drop the expired entries; how many."""
        now = self._clock()
        gone = [k for k, e in self._entries.items() if e.expires is not None and now >= e.expires]
        for key in gone:
            del self._entries[key]
        self._added = 0
        if gone:
            self.changes += 1
        return len(gone)

    def entries(self) -> Mapping[Key, Entry]:
        """The entries (read-only use: for printing)."""
        return self._entries

    # -- persistence (records for server.sticky_file) -------------------------------

    def export(self, wall_now: float | None = None) -> list[dict[str, Any]]:
        """The unexpired entries as records: farm, client, backend, and ``expires`` as
        wall-clock seconds (an entry with live sessions as if they ended now)."""
        wall = time.time() if wall_now is None else wall_now
        now = self._clock()
        records = []
        for (farm, client), entry in self._entries.items():
            left = entry.timeout if entry.expires is None else entry.expires - now
            if left <= 0:
                continue
            records.append(
                {
                    "farm": farm,
                    "client": client,
                    "backend": entry.backend,
                    "expires": round(wall + left, 3),
                    "timeout": entry.timeout,
                }
            )
        return records

    def restore(self, records: Iterable[Mapping[str, Any]], wall_now: float | None = None) -> int:
        """Add ``export``'s records that have not expired by ``wall_now``; how many.

        Raises:
            ValueError: a record is not one ``export`` writes.
        """
        wall = time.time() if wall_now is None else wall_now
        now = self._clock()
        count = 0
        for record in records:
            try:
                farm, client, backend = record["farm"], record["client"], record["backend"]
                expires, timeout = float(record["expires"]), float(record["timeout"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"not a sticky record: {record!r}") from exc
            if not all(isinstance(v, str) for v in (farm, client, backend)):
                raise ValueError(f"not a sticky record: {record!r}")
            if expires <= wall or len(self._entries) >= self._max:
                continue
            left = min(expires - wall, timeout, MAX_SECONDS)  # never longer than it was set for
            self._entries[(farm, client)] = Entry(backend, timeout, 0, now + left)
            count += 1
        return count
