"""Counters and histograms fed by session events, as they happen: /metrics' alerting figures.

The statistics collector (stats.py) sums what it sees when it walks the sessions once
per interval; these figures are events instead, counted the moment they happen by
``SessionMetrics`` (the server's ``events`` observer, session/metrics_hooks.py, and one of its
``session_ended`` callbacks):

* sessions **opened** (the broker accepted the client's vhost) and **closed** (an opened
  session ended), by who ended it: opened minus closed is the sessions forwarding now;
* failed **connect attempts** per backend and a fixed set of reasons;
* **latencies**: the client handshake, and reaching a broker (connects, failover and
  the broker handshake) per backend.

It also keeps the **routed vhosts**: those a broker accepted. Only those (and the vhosts
the operator maps by name) become ``vhost`` label values; a client can ask for any vhost
in Connection.Open, and one refused or unmapped must not mint a Prometheus series.

Every label value here is bounded by configuration (backend names) or a fixed set.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from amqprouter.observe.stats import MAX_TOTALS
from amqprouter.session import End
from amqprouter.session.metrics_hooks import CONNECT_FAILURES

if TYPE_CHECKING:
    from amqprouter.routing import Backend
    from amqprouter.session import Session

#: Upper bounds (seconds) of the latency buckets: a local broker opens in about 2 ms,
#: one across a WAN or a TLS handshake in tens to hundreds; the top buckets catch
#: connect timeouts (default 5 s) and failover across several backends.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: ``reason`` of amqprouter_sessions_closed_total.
CLIENT: Final = "client"
BROKER: Final = "broker"
OPERATOR: Final = "operator"
ERROR: Final = "error"
SHUTDOWN: Final = "shutdown"
CLOSE_REASONS: Final = (CLIENT, BROKER, OPERATOR, ERROR, SHUTDOWN)

#: Who ended an opened session, by its End. CLEAN (a close handshake) is the side that
#: sent the Close; the router's own ends are OPERATOR (SHUTDOWN during a drain).
_CLOSED: Final[Mapping[End, str]] = {
    End.CLIENT_GONE: CLIENT,
    End.BROKER_GONE: BROKER,
    End.CLIENT_ERROR: ERROR,
    End.BROKER_ERROR: ERROR,
    End.TIMEOUT: ERROR,
    End.OPERATOR: OPERATOR,
    End.OPERATOR_FORCED: OPERATOR,
    End.OPERATOR_BACKEND: OPERATOR,
    End.BROKER_SILENT: ERROR,
    End.BROKER_STUCK: ERROR,
    End.CLIENT_SILENT: ERROR,
    End.CLIENT_STUCK: ERROR,
}


class Histogram:
    """A Prometheus histogram's state: a count per bucket (not cumulative), sum, count."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "<=").
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(``le`` label value, observations at or below it), +Inf last."""
        rows: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(repr, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


def close_reason(session: Session, *, shutting_down: bool) -> str:
    """The ``reason`` an opened session closed for (one of ``CLOSE_REASONS``)."""
    end = session.ended
    if end is End.CLEAN:
        return BROKER if session.close_started_by == "broker" else CLIENT
    reason = ERROR if end is None else _CLOSED.get(end, OPERATOR)
    if shutting_down and reason == OPERATOR:
        return SHUTDOWN
    return reason


class SessionMetrics:
    """The server's session observer: see the module docstring."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)
        #: (backend name, reason) → failed connect attempts.
        self.connect_failures: dict[tuple[str, str], int] = {}
        self.handshake = Histogram()
        #: Backend name → time to reach it (connects, failover, broker handshake).
        self.connect: dict[str, Histogram] = {}
        #: Vhosts a broker accepted (at most MAX_TOTALS): the vhost label values.
        self.routed: set[str] = set()
        #: Set by the composition root before it drains for SIGTERM or EXIT GRACEFUL:
        #: the router's disconnects from then on are counted as SHUTDOWN.
        self.shutting_down = False
        self._open: set[int] = set()

    # -- session/metrics_hooks.py's SessionEvents ---------------------------------------------

    def client_opened(self, session: Session, seconds: float) -> None:
        self.handshake.observe(seconds)

    def broker_opened(self, session: Session, seconds: float) -> None:
        self.opened += 1
        self._open.add(session.id)
        if session.vhost is not None and len(self.routed) < MAX_TOTALS:
            self.routed.add(session.vhost)
        name = "" if session.backend is None else session.backend.name
        histogram = self.connect.get(name)
        if histogram is None:
            histogram = self.connect[name] = Histogram()
        histogram.observe(seconds)

    def connect_failed(self, backend: Backend, reason: str) -> None:
        if reason not in CONNECT_FAILURES:  # a fixed label set, whatever a caller says
            reason = CONNECT_FAILURES[-1]
        key = (backend.name, reason)
        self.connect_failures[key] = self.connect_failures.get(key, 0) + 1

    # -- the server's session_ended callback --------------------------------------------

    def session_ended(self, session: Session) -> None:
        if session.id in self._open:
            self._open.discard(session.id)
            self.closed[close_reason(session, shutting_down=self.shutting_down)] += 1
