"""``/metrics`` (Prometheus text exposition format 0.0.4) and ``/healthz``.

Counters are the collector's running totals (they include sessions that ended, and
move once per stats interval); gauges are the last snapshot's. Series are kept per
(vhost, backend name): the client-host axis stays out of Prometheus (its label
would have a value per client address).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from amqprouter import __version__
from amqprouter.observe.http import Response
from amqprouter.observe.process import current_rss_kb
from amqprouter.observe.stats import ConnectionStats, Removal, StatsCollector

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

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def metrics_text(
    collector: StatsCollector,
    *,
    listeners: int,
    backend_up: Mapping[str, bool] | None = None,
    refused: int = 0,
) -> str:
    """The /metrics page.

    ``backend_up`` (backend name → reachable, from a health monitor) fills
    ``amqprouter_backend_up``; None leaves that family without samples.
    """
    out = _Exposition()
    out.family("amqprouter_build_info", "gauge", "amqprouter's version; always 1.")
    out.sample("amqprouter_build_info", [("version", __version__)], 1)
    totals = sorted(collector.totals.items())
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
    ):
        out.family(name, "counter", help_text)
        for (vhost, backend), total in totals:
            out.sample(name, [("vhost", vhost), ("backend", backend)], getattr(total, field))
    last = collector.last.pairs
    for name, field, help_text in (
        ("amqprouter_sessions_active", "active", "Sessions not disconnected, now."),
        ("amqprouter_sessions_paused", "paused", "Sessions paused, now."),
    ):
        out.family(name, "gauge", help_text)
        for pair, _total in totals:
            stats = last.get(pair) or ConnectionStats()
            out.sample(name, [("vhost", pair[0]), ("backend", pair[1])], getattr(stats, field))
    out.family("amqprouter_backend_up", "gauge", "1 when the health check finds the backend up.")
    for backend, up in sorted((backend_up or {}).items()):
        out.sample("amqprouter_backend_up", [("backend", backend)], int(up))
    out.family("amqprouter_listeners", "gauge", "Client listeners open.")
    out.sample("amqprouter_listeners", [], listeners)
    name = "amqprouter_connections_refused_total"
    out.family(name, "counter", "Clients refused by a listener's ALLOW list.")
    out.sample(name, [], refused)
    cpu = os.times()
    out.family("process_cpu_seconds_total", "counter", "User and system CPU time spent.")
    out.sample("process_cpu_seconds_total", [], round(cpu.user + cpu.system, 3))
    out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
    out.sample("process_resident_memory_bytes", [], current_rss_kb() * 1024)
    return out.text()


def health_reason(
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


def healthz(reason: Callable[[], str | None]) -> Response:
    why = reason()
    return Response(200, "ok\n") if why is None else Response(503, why + "\n")


def metrics(text: Callable[[], str]) -> Response:
    return Response(200, text(), CONTENT_TYPE)
