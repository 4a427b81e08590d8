"""``/metrics`` (Prometheus text exposition format 0.0.4) and the readiness check.

Traffic counters are the collector's running totals (they include sessions that
ended, and move once per stats interval); its gauges are the last snapshot's. Series
are kept per (vhost, backend name): the client-host axis stays out of Prometheus (its
label would have a value per client address). The session counters and latency
histograms (session_metrics.py) move as events happen.

**Label values are bounded.** ``vhost`` takes only the values ``vhost_label`` lets
through (the composition root's: vhosts a broker accepted or the operator mapped, and
``""`` for sessions that never sent Connection.Open); every other vhost is summed into
``OTHER_VHOST``, so a client naming vhosts at random cannot mint series. ``backend``
is a configured backend's name; ``reason`` and ``direction`` are fixed sets.

The exposition is written here, not by prometheus_client: it is a few dozen lines for
the three types we use, our figures are snapshots that a registry of live metric
objects would only mirror, and the router keeps no runtime dependency for it (the
tests parse the page with prometheus_client's own parser).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Mapping
from typing import Final

import attrs

from amqprouter import __version__
from amqprouter.net.tls_context import DIRECTIONS, TlsState
from amqprouter.observe.http import Response
from amqprouter.observe.process import ProcessFigures, process_figures
from amqprouter.observe.session_metrics import Histogram, SessionMetrics
from amqprouter.observe.stats import (
    OTHER_VHOST,
    ConnectionStats,
    Removal,
    StatsCollector,
    Totals,
)
from amqprouter.server.primed import PoolStats
from amqprouter.session.pool import PoolFigures

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: ``reason`` label of amqprouter_sessions_ended_total, per Removal.
REASONS: Final = {
    Removal.GRACEFUL: "graceful",
    Removal.BROKER_SNAPPED: "broker_snapped",
    Removal.CLIENT_SNAPPED: "client_snapped",
    Removal.HANDSHAKE: "handshake",
}
_DIRECTIONS: Final = (("client_to_broker", "received"), ("broker_to_client", "sent"))


def escape_label(value: str) -> str:
    """A label value as the exposition format writes it: ``\\``, ``"`` and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: The primed pool's counters and how many connections it holds now.
PrimedFigures = tuple[PoolStats, int]


def _identity(vhost: str) -> str:
    return vhost


def vhost_labeller(routed: Container[str], mapped: Container[str]) -> Callable[[str], str]:
    """The ``vhost_label`` of ``metrics_text``: a vhost in ``routed`` (a broker accepted
    it) or ``mapped`` (the operator named it), or ``""``, is its own label; any other
    becomes ``OTHER_VHOST``."""

    def label(vhost: str) -> str:
        return vhost if not vhost or vhost in routed or vhost in mapped else OTHER_VHOST

    return label


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {value}")

    def histogram(self, name: str, labels: list[tuple[str, str]], histogram: Histogram) -> None:
        for bound, count in histogram.cumulative():
            self.sample(f"{name}_bucket", [*labels, ("le", bound)], count)
        self.sample(f"{name}_sum", labels, histogram.sum)
        self.sample(f"{name}_count", labels, histogram.count)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def _relabelled_totals(
    collector: StatsCollector, vhost_label: Callable[[str], str]
) -> list[tuple[tuple[str, str], Totals]]:
    """The running totals with their vhosts relabelled, pairs that meet summed."""
    merged: dict[tuple[str, str], Totals] = {}
    for (vhost, backend), total in collector.totals.items():
        pair = (vhost_label(vhost), backend)
        into = merged.get(pair)
        if into is None:
            merged[pair] = attrs.evolve(total, removed=list(total.removed))
            continue
        for field in attrs.fields(Totals):
            if field.name == "removed":
                into.removed = [a + b for a, b in zip(into.removed, total.removed, strict=True)]
            else:
                setattr(into, field.name, getattr(into, field.name) + getattr(total, field.name))
    return sorted(merged.items())


def metrics_text(
    collector: StatsCollector,
    *,
    listeners: int,
    backend_up: Mapping[str, bool] | None = None,
    refused: int = 0,
    shed: int = 0,
    events: SessionMetrics | None = None,
    vhost_label: Callable[[str], str] = _identity,
    paused_vhosts: int = 0,
    process: ProcessFigures | None = None,
    primed: PrimedFigures | None = None,
    pool: PoolFigures | None = None,
    tls_expiry: Iterable[tuple[str, str, float]] = (),
) -> str:
    """The /metrics page.

    ``backend_up`` (backend name → reachable, from a health monitor) fills
    ``amqprouter_backend_up``; None leaves that family without samples. ``events``
    fills the session counters and histograms (no samples without it).
    ``vhost_label`` maps each vhost to its label value (see the module docstring).
    ``process`` is read from /proc when not given. ``primed``: the primed broker
    connections' counters and how many are ready now (no samples without it). ``pool``:
    pooling mode's figures (no samples without it).
    ``tls_expiry``: (role, subject, notAfter in epoch seconds) of each certificate the
    router presents (``ingress``, ``egress``), as of its last load.
    """
    out = _Exposition()
    out.family("amqprouter_build_info", "gauge", "amqprouter's version; always 1.")
    out.sample("amqprouter_build_info", [("version", __version__)], 1)
    totals = _relabelled_totals(collector, vhost_label)
    for unit, field, help_text in (
        ("bytes", "bytes", "Bytes forwarded, by direction."),
        ("frames", "frames", "AMQP frames forwarded, by direction."),
        ("reads", "packets", "Socket reads that carried data, by direction."),
    ):
        name = f"amqprouter_{unit}_total"
        out.family(name, "counter", help_text)
        for (vhost, backend), total in totals:
            for direction, suffix in _DIRECTIONS:
                labels = [("direction", direction), ("vhost", vhost), ("backend", backend)]
                out.sample(name, labels, getattr(total, f"{field}_{suffix}"))
    name = "amqprouter_sessions_ended_total"
    out.family(name, "counter", "Sessions ended, by close reason.")
    for (vhost, backend), total in totals:
        for reason, label in REASONS.items():
            labels = [("vhost", vhost), ("backend", backend), ("reason", label)]
            out.sample(name, labels, total.removed[reason])
    for name, field, help_text in (
        ("amqprouter_connections_limited_total", "limited", "Clients refused by a LIMIT."),
        (
            "amqprouter_connections_alarmed_total",
            "alarmed",
            "Connections that set off an alarm-only LIMIT.",
        ),
        (
            "amqprouter_connections_auth_denied_total",
            "auth_denied",
            "Clients the auth service denied (or failed to answer for).",
        ),
    ):
        out.family(name, "counter", help_text)
        for (vhost, backend), total in totals:
            out.sample(name, [("vhost", vhost), ("backend", backend)], getattr(total, field))
    last: dict[tuple[str, str], ConnectionStats] = {}
    for (vhost, backend), stats in collector.last.pairs.items():
        pair = (vhost_label(vhost), backend)
        into = last.get(pair)
        if into is None:
            into = last[pair] = ConnectionStats()
        into.add(stats)
    for name, field, help_text in (
        ("amqprouter_sessions_active", "active", "Sessions not disconnected, now."),
        ("amqprouter_sessions_paused", "paused", "Sessions paused, now."),
    ):
        out.family(name, "gauge", help_text)
        for pair, _total in totals:
            stats = last.get(pair) or ConnectionStats()
            out.sample(name, [("vhost", pair[0]), ("backend", pair[1])], getattr(stats, field))
    name = "amqprouter_tls_certificate_expiry_seconds"
    out.family(name, "gauge", "When the certificate the router presents expires (Unix time).")
    for role, subject, not_after in tls_expiry:
        out.sample(name, [("role", role), ("subject", subject)], not_after)
    out.family("amqprouter_vhosts_paused", "gauge", "Vhosts paused by VHOST PAUSE, now.")
    out.sample("amqprouter_vhosts_paused", [], paused_vhosts)
    if events is not None:
        _session_events(out, events)
    out.family(
        "amqprouter_backend_up",
        "gauge",
        "1 when the backend's health check finds it up, 0 when down; no sample without a check.",
    )
    for backend, up in sorted((backend_up or {}).items()):
        out.sample("amqprouter_backend_up", [("backend", backend)], int(up))
    out.family("amqprouter_listeners", "gauge", "Client listeners open.")
    out.sample("amqprouter_listeners", [], listeners)
    name = "amqprouter_connections_refused_total"
    out.family(name, "counter", "Clients refused by a listener's ALLOW list.")
    out.sample(name, [], refused)
    name = "amqprouter_connections_shed_total"
    out.family(
        name,
        "counter",
        "Connections still in their handshake cut to make room for a new client "
        "(a listener at --max-connections, or the process short of descriptors).",
    )
    out.sample(name, [], shed)
    if primed is not None:
        _primed(out, *primed)
    if pool is not None:
        _pool(out, pool)
    _process(out, process or process_figures())
    return out.text()


def _primed(out: _Exposition, stats: PoolStats, ready: int) -> None:
    name = "amqprouter_primed_connections_total"
    out.family(
        name,
        "counter",
        "Primed broker connections (--primed-connections): opened (greeted), used by a "
        "session, discarded unused (aged out, backend changed or down, found dead), failed "
        "to open.",
    )
    for outcome in ("opened", "used", "discarded", "failed"):
        out.sample(name, [("outcome", outcome)], getattr(stats, outcome))
    name = "amqprouter_primed_misses_total"
    out.family(name, "counter", "Sessions that found no primed connection and connected anew.")
    out.sample(name, [], stats.missed)
    name = "amqprouter_primed_connections_ready"
    out.family(name, "gauge", "Primed broker connections waiting for a session, now.")
    out.sample(name, [], ready)


def _pool(out: _Exposition, pool: PoolFigures) -> None:
    for name, kind, help_text, value in (
        (
            "amqprouter_pool_connections",
            "gauge",
            "Pooled broker connections open now (pooling mode).",
            pool.links,
        ),
        ("amqprouter_pool_clients", "gauge", "Clients on pooled connections now.", pool.clients),
        (
            "amqprouter_pool_connections_opened_total",
            "counter",
            "Pooled broker connections opened.",
            pool.links_opened,
        ),
        (
            "amqprouter_pool_clients_total",
            "counter",
            "Clients served by pooled broker connections.",
            pool.clients_served,
        ),
        (
            "amqprouter_pool_channels_reused_total",
            "counter",
            "Client Channel.Opens answered with a broker channel kept open.",
            pool.channels_reused,
        ),
    ):
        out.family(name, kind, help_text)
        out.sample(name, [], value)
    name = "amqprouter_pool_channels"
    out.family(name, "gauge", "Broker channels of pooled connections now, by state.")
    out.sample(name, [("state", "in_use")], pool.channels - pool.idle_channels)
    out.sample(name, [("state", "idle")], pool.idle_channels)


def _session_events(out: _Exposition, events: SessionMetrics) -> None:
    name = "amqprouter_sessions_opened_total"
    out.family(name, "counter", "Sessions opened: the broker accepted the client's vhost.")
    out.sample(name, [], events.opened)
    name = "amqprouter_sessions_closed_total"
    out.family(name, "counter", "Opened sessions that ended, by who ended them.")
    for reason, count in events.closed.items():
        out.sample(name, [("reason", reason)], count)
    name = "amqprouter_backend_connect_failures_total"
    out.family(name, "counter", "Failed connect attempts to a backend, by reason.")
    for (backend, reason), count in sorted(events.connect_failures.items()):
        out.sample(name, [("backend", backend), ("reason", reason)], count)
    name = "amqprouter_handshake_seconds"
    out.family(name, "histogram", "Client handshake: accept to the client's Connection.Open.")
    out.histogram(name, [], events.handshake)
    name = "amqprouter_connect_seconds"
    out.family(name, "histogram", "Reaching a broker: first connect attempt to its Open-Ok.")
    for backend, histogram in sorted(events.connect.items()):
        out.histogram(name, [("backend", backend)], histogram)


#: (name, type, help, ProcessFigures field), prometheus_client's process collector's.
_PROCESS: Final = (
    (
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        "cpu_seconds_total",
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "start_time_seconds",
    ),
    ("process_open_fds", "gauge", "Number of open file descriptors.", "open_fds"),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors.", "max_fds"),
    (
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        "resident_memory_bytes",
    ),
    (
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        "virtual_memory_bytes",
    ),
)


def _process(out: _Exposition, figures: ProcessFigures) -> None:
    for name, kind, help_text, field in _PROCESS:
        value = getattr(figures, field)
        if value is not None:  # what /proc cannot tell is left out, not written as 0
            out.family(name, kind, help_text)
            out.sample(name, [], value)


def tls_expiries(tls: TlsState) -> list[tuple[str, str, float]]:
    """``metrics_text``'s ``tls_expiry``: each direction's presented certificate, as of
    its last load (INGRESS's to clients, EGRESS's client certificate to brokers)."""
    found = []
    for direction in DIRECTIONS:
        expiry = tls.expiry(direction)
        if expiry is not None:
            found.append((direction.lower(), expiry.subject, expiry.not_after))
    return found


def ready_reason(
    *,
    listeners: int,
    backends: int,
    backend_up: Mapping[str, bool] | None = None,
    disabled: Collection[str] = (),
) -> str | None:
    """Why the router cannot serve now, or None when it can.

    It can when a client listener is open, a backend is configured and not disabled
    (BACKEND DISABLE/DRAIN) and, when a health monitor reports, at least one of the
    enabled backends is up.
    """
    if not listeners:
        return "no listener"
    if not backends:
        return "no backend configured"
    if len(disabled) >= backends:
        return "every backend is disabled"
    usable = [up for name, up in (backend_up or {}).items() if name not in disabled]
    if usable and not any(usable):
        return "no backend up"
    return None


def probe(reason: Callable[[], str | None]) -> Response:
    """200 ``ok`` when ``reason`` says nothing, else 503 and the reason (/readyz, /livez)."""
    why = reason()
    return Response(200, "ok\n") if why is None else Response(503, why + "\n")


def metrics(text: Callable[[], str]) -> Response:
    return Response(200, text(), CONTENT_TYPE)
