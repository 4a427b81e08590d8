"""The LIMIT settings and the state they act on: connection rates, concurrent
connections and data rates, per vhost or by default (docs/edge.md, "Limits").

Plain methods, no command words: control/limit_commands.py translates LIMIT and
words the replies. Sessions meet this at two points only:

* ``admit`` at the client's Connection.Open, before routing, any broker
  connection or a paused vhost's hold: the concurrent limit first (it has
  priority, as in amqpprox PR #91), then the connection-rate alarm and limit.
  ``release`` when an admitted session ends.
* ``data_budget``: a fresh per-connection byte budget for the vhost (None when
  no data limit applies, so the pump pays nothing).

A DEFAULT connection-rate limit is one limiter *per vhost* with the default
rate, not one shared by all vhosts (as in amqpprox); a vhost's own limit
overrides it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final, Literal, get_args

import attrs
import structlog
import trio

from amqprouter.protocol import constants
from amqprouter.routing.rate_window import BURST_SECONDS, DataBudget, FixedWindow

log = structlog.get_logger("amqprouter.limits")

LimitKind = Literal["CONN_RATE", "CONN_RATE_ALARM", "DATA_RATE", "DATA_RATE_ALARM", "CONNECTIONS"]
LIMIT_KINDS: Final[tuple[LimitKind, ...]] = get_args(LimitKind)
#: Rate windows kept before the expired ones are swept: a client names any vhost it
#: likes, and under a DEFAULT rate each name gets a window. An expired window counts
#: exactly like a new one, so sweeping them changes nothing.
MAX_WINDOWS: Final = 10_000
#: The substring amqpprox's operators grep their logs for, renamed with the product
#: (reference/amqpprox.md: AMQPPROX_CONNECTION_LIMIT becomes this).
CONNECTION_LIMIT_TAG: Final = "AMQPROUTER_CONNECTION_LIMIT"


@attrs.frozen
class Admitted:
    """A client may open its vhost; ``alarmed`` when an alarm-only limit would have
    refused it (logged and counted)."""

    alarmed: bool = False


@attrs.frozen
class Refusal:
    """Why a client is not admitted: the Close it gets, and the limit that refused it."""

    reply_code: int
    reply_text: str
    kind: LimitKind


class Limits:
    """Every LIMIT setting (``None`` as the vhost is DEFAULT) and the state they use."""

    def __init__(
        self, clock: Callable[[], float] = trio.current_time, burst_seconds: float = BURST_SECONDS
    ) -> None:
        self._clock = clock
        #: The DATA_RATE bucket's size, in seconds of the rate (--data-rate-burst).
        self.burst_seconds = burst_seconds
        #: kind → (vhost or None for DEFAULT) → value.
        self.settings: dict[LimitKind, dict[str | None, int]] = {k: {} for k in LIMIT_KINDS}
        # Connection-rate windows, per kind and vhost, built on first use from the limit
        # in force; dropped when that limit changes.
        self._windows: dict[tuple[LimitKind, str], FixedWindow] = {}
        # Admitted sessions (id → vhost) and how many per vhost: CONNECTIONS.
        self._admitted: dict[int, str] = {}
        self._concurrent: Counter[str] = Counter()

    # -- settings --------------------------------------------------------------------

    def set(self, kind: LimitKind, vhost: str | None, value: int) -> None:
        self.settings[kind][vhost] = value
        self._forget_windows(kind, vhost)

    def disable(self, kind: LimitKind, vhost: str | None) -> None:
        self.settings[kind].pop(vhost, None)
        self._forget_windows(kind, vhost)

    def effective(self, kind: LimitKind, vhost: str) -> tuple[int, bool] | None:
        """The limit of ``kind`` for ``vhost`` and whether it is the DEFAULT; None if none."""
        values = self.settings[kind]
        if vhost in values:
            return values[vhost], False
        if None in values:
            return values[None], True
        return None

    def _forget_windows(self, kind: LimitKind, vhost: str | None) -> None:
        if vhost is not None:
            self._windows.pop((kind, vhost), None)
            return
        # A new DEFAULT rebuilds every limiter derived from it.
        own = self.settings[kind]
        for key in [key for key in self._windows if key[0] == kind and key[1] not in own]:
            del self._windows[key]

    # -- Connection.Open -------------------------------------------------------------

    def admit(self, session_id: int, vhost: str) -> Admitted | Refusal:
        """Count one client opening ``vhost``; a ``Refusal`` if a limit refuses it.

        An admitted session holds its place in CONNECTIONS until ``release``.
        """
        concurrent = self.effective("CONNECTIONS", vhost)
        if concurrent is not None and self._concurrent[vhost] >= concurrent[0]:
            log.debug(
                f"{CONNECTION_LIMIT_TAG}: The connection request for {vhost} is limited by "
                f"{'default ' if concurrent[1] else ''}at most {concurrent[0]} concurrent "
                "connections"
            )
            return Refusal(
                constants.RESOURCE_ERROR,
                f"The connection for {vhost}, is limited by proxy: at most {concurrent[0]} "
                "concurrent connections.",
                "CONNECTIONS",
            )
        now = self._clock()
        alarm = self._rate_allows("CONN_RATE_ALARM", vhost, now)
        if alarm is not None:
            log.warning(f"{CONNECTION_LIMIT_TAG}: The connection request for {vhost} {alarm}")
        limited = self._rate_allows("CONN_RATE", vhost, now)
        if limited is not None:
            log.debug(f"{CONNECTION_LIMIT_TAG}: The connection request for {vhost} {limited}")
            return Refusal(
                constants.RESOURCE_ERROR,
                f"The connection for {vhost}, is limited by proxy.",
                "CONN_RATE",
            )
        self._admitted[session_id] = vhost
        self._concurrent[vhost] += 1
        return Admitted(alarmed=alarm is not None)

    def _rate_allows(self, kind: LimitKind, vhost: str, now: float) -> str | None:
        """None when the ``kind`` limiter allows one more; else the log line's tail."""
        limit = self.effective(kind, vhost)
        if limit is None:
            return None
        window = self._windows.get((kind, vhost))
        if window is None:
            if len(self._windows) >= MAX_WINDOWS:
                self._sweep(now)
            window = self._windows[kind, vhost] = FixedWindow(limit[0])
        if window.allow(now):
            return None
        default = "default " if limit[1] else ""
        return (
            f"should be limited by {default}Allow average {limit[0]} number of connections "
            "per 1 seconds"
        )

    def _sweep(self, now: float) -> None:
        for key in [key for key, window in self._windows.items() if window.expired(now)]:
            del self._windows[key]

    def windows(self) -> int:
        """How many rate windows are kept (for tests of the bound)."""
        return len(self._windows)

    def release(self, session_id: int) -> None:
        """An admitted session ended (a no-op for one never admitted)."""
        vhost = self._admitted.pop(session_id, None)
        if vhost is not None:
            self._concurrent[vhost] -= 1
            if not self._concurrent[vhost]:
                del self._concurrent[vhost]

    def concurrent(self, vhost: str) -> int:
        """Admitted sessions of ``vhost`` now."""
        return self._concurrent[vhost]

    # -- data rates ------------------------------------------------------------------

    def data_budget(self, vhost: str | None) -> DataBudget | None:
        """A new budget for one connection of ``vhost`` (None: before Open, the
        DEFAULT); None when neither DATA_RATE nor DATA_RATE_ALARM applies."""
        if vhost is None:
            limit, alarm = (
                self.settings["DATA_RATE"].get(None),
                self.settings["DATA_RATE_ALARM"].get(None),
            )
        else:
            found, alarm_found = (
                self.effective("DATA_RATE", vhost),
                self.effective("DATA_RATE_ALARM", vhost),
            )
            limit = None if found is None else found[0]
            alarm = None if alarm_found is None else alarm_found[0]
        if limit is None and alarm is None:
            return None
        return DataBudget(limit, alarm, self.burst_seconds)
