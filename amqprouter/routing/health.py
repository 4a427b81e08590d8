"""Which backends are down, why and since when: the health registry.

Two kinds of evidence feed one up/down state per backend name:

* **passive**: a session could not connect to any address of a backend (refused,
  timed out, unresolvable). The backend is marked down for ``down_seconds``, then
  it is up again by itself; another failed connect meanwhile extends the mark, a
  successful one lifts it at once.
* **active** (``BACKEND CHECK``, run by ``server.health``): every check reports
  passed or failed; ``fall`` failures in a row mark the backend down until ``rise``
  passes in a row mark it up, as HAProxy's ``fall``/``rise`` do. A check's down
  mark does not expire by itself.

Sessions ask ``down()`` for the names to try last (``RoutingTable.candidates``),
once per connection. A backend with no evidence has no entry at all, so the
registry costs nothing while every backend is healthy.

Every transition is logged (WARNING down, with the reason; INFO up) and an up→down
transition calls ``on_down(name, reason)`` exactly once (the farm policy ``FARM
ON_DOWN``). The clock is injectable; the default is trio's, so tests run it on
``trio.testing.MockClock``. One trio thread uses it: no locks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
import structlog
import trio

log = structlog.get_logger("amqprouter.health")

#: How long a failed connect keeps a backend down (``--backend-down-seconds``):
#: long enough that a burst of new connections does not each wait on a dead
#: broker, short enough that a restarted broker gets traffic again soon.
DOWN_SECONDS: Final = 10.0


@attrs.define
class Check:
    """The fall/rise rule of an active check and its counters."""

    fall: int
    rise: int
    failures: int = 0  # consecutive failed checks
    passes: int = 0  # consecutive passed checks


@attrs.define
class BackendHealth:
    """One backend's health: down or up, why, since when, and its active check."""

    down: bool
    reason: str
    since: float
    #: A passive mark ends at this time by itself; None for a check's mark (or up).
    until: float | None = None
    check: Check | None = None

    @property
    def idle(self) -> bool:
        """Nothing worth keeping: up and not checked."""
        return not self.down and self.check is None


class HealthRegistry:
    """Up/down state per backend name, fed by failed connects and active checks."""

    def __init__(
        self,
        *,
        down_seconds: float = DOWN_SECONDS,
        clock: Callable[[], float] = trio.current_time,
        on_down: Callable[[str, str], None] | None = None,
    ) -> None:
        self.down_seconds = down_seconds
        self._clock = clock
        self.on_down = on_down
        self._states: dict[str, BackendHealth] = {}

    def get(self, name: str) -> BackendHealth | None:
        """``name``'s health (None: nothing known, i.e. up and not checked)."""
        self._expire(name)
        return self._states.get(name)

    def down(self) -> frozenset[str]:
        """The backends down now (passive marks past their time are lifted first)."""
        if not self._states:
            return frozenset()
        for name in list(self._states):
            self._expire(name)
        return frozenset(name for name, state in self._states.items() if state.down)

    # -- passive evidence --------------------------------------------------------------

    def connect_failed(self, name: str, reason: str) -> None:
        """No address of ``name`` accepted a connection: down for ``down_seconds``."""
        until = self._clock() + self.down_seconds
        state = self.get(name)
        if state is not None and state.down:
            if state.until is not None:  # a check's mark stays until checks pass
                state.until, state.reason = until, f"connect failed: {reason}"
            return
        self._mark_down(name, f"connect failed: {reason}", until)

    def connect_succeeded(self, name: str) -> None:
        """A connection to ``name`` was accepted: it is up, whatever marked it down."""
        state = self.get(name)
        if state is not None and state.down:
            self._mark_up(name, "a connection succeeded")

    # -- active evidence ---------------------------------------------------------------

    def start_checking(self, name: str, fall: int, rise: int) -> None:
        """From now on ``name`` is checked with this fall/rise rule (counters reset)."""
        state = self._states.setdefault(name, BackendHealth(False, "", self._clock()))
        state.check = Check(fall, rise)

    def stop_checking(self, name: str) -> None:
        """No more checks for ``name``; a check's down mark goes with them."""
        state = self._states.get(name)
        if state is None or state.check is None:
            return
        state.check = None
        if state.down and state.until is None:
            self._mark_up(name, "checks turned off")
        self._drop_if_idle(name)

    def check_passed(self, name: str) -> None:
        state = self.get(name)
        if state is None or state.check is None:
            return
        check = state.check
        check.failures = 0
        check.passes += 1
        if state.down and check.passes >= check.rise:
            self._mark_up(name, f"{check.passes} checks passed")

    def check_failed(self, name: str, reason: str) -> None:
        state = self.get(name)
        if state is None or state.check is None:
            return
        check = state.check
        check.passes = 0
        check.failures += 1
        if check.failures < check.fall:
            return
        if not state.down:
            self._mark_down(name, reason, None)
        else:
            # Already down (maybe passively): the checks hold it down now, with their reason.
            state.reason, state.until = reason, None

    def forget(self, name: str) -> None:
        """``name`` no longer exists (BACKEND DELETE)."""
        self._states.pop(name, None)

    # -- rendering -------------------------------------------------------------------

    def describe(self, name: str) -> str:
        """What BACKEND PRINT appends for ``name``: "" with no health information,
        `` UP`` for a checked backend that is up, `` DOWN (why)`` for one that is down."""
        state = self.get(name)
        if state is None:
            return ""
        if not state.down:
            return " UP" if state.check is not None else ""
        if state.until is not None:
            left = max(0.0, state.until - self._clock())
            return f" DOWN ({state.reason}, {left:.1f}s left)"
        failures = state.check.failures if state.check is not None else 0
        return f" DOWN ({state.reason}, {failures} check{'' if failures == 1 else 's'})"

    # -- transitions -----------------------------------------------------------------

    def _expire(self, name: str) -> None:
        state = self._states.get(name)
        if state is None or not state.down or state.until is None:
            return
        if self._clock() >= state.until:
            self._mark_up(name, f"down for {self.down_seconds:g}s after a failed connect")

    def _mark_down(self, name: str, reason: str, until: float | None) -> None:
        state = self._states.setdefault(name, BackendHealth(False, "", self._clock()))
        state.down, state.reason, state.since, state.until = True, reason, self._clock(), until
        if state.check is not None:
            state.check.passes = 0
        log.warning(
            "backend down",
            backend=name,
            reason=reason,
            passive=until is not None,
        )
        if self.on_down is not None:
            self.on_down(name, reason)

    def _mark_up(self, name: str, why: str) -> None:
        state = self._states[name]
        was_down_for = self._clock() - state.since
        state.down, state.reason, state.since, state.until = False, "", self._clock(), None
        if state.check is not None:
            state.check.failures = 0
        log.info("backend up", backend=name, reason=why, down_seconds=round(was_down_for, 3))
        self._drop_if_idle(name)

    def _drop_if_idle(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None and state.idle:
            del self._states[name]
