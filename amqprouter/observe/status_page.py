"""The status page at ``/``: one HTML page for an operator's browser, no JavaScript.

It shows what CONFIG PRINT, BACKEND PRINT and STAT show, at a glance: readiness,
listeners, backends (address, enabled, health, sessions), farms, vhost mappings, paused
vhosts, and the vhosts with the most traffic. A ``<meta http-equiv="refresh">`` reloads
it every ``REFRESH`` seconds.

**Every string on it is escaped.** Vhost names are a client's choice, backend and farm
names an operator's, health reasons carry error texts: each goes through ``_text``
(unprintable characters as Python escapes, as the control socket prints them, then
HTML's five special characters), so no name can add markup or a script to the page.
Building it walks the sessions once (to count sessions per backend), as CONN does.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from amqprouter import __version__
from amqprouter.net.sockets import endpoint
from amqprouter.observe.stats import NO_RATES, ConnectionStats, Removal, StatsCollector
from amqprouter.protocol.client_identity import bounded
from amqprouter.text import escape

if TYPE_CHECKING:
    from amqprouter.observe.session_metrics import SessionMetrics
    from amqprouter.server import Server

#: Seconds between reloads (the meta tag's).
REFRESH: Final = 5
#: Rows in the top-vhosts table.
TOP_VHOSTS: Final = 10
#: Rows in the top-talkers table (the sessions with the highest byte rate).
TOP_TALKERS: Final = 10
CONTENT_TYPE: Final = "text/html; charset=utf-8"

_STYLE: Final = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; min-width: 30em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #dde6f0; }
.up, .ok { background: #d8f0d8; } .down, .fail { background: #f6d5d5; }
.off { background: #eee; color: #777; } .empty { color: #777; font-style: italic; }
"""


def _text(value: object) -> str:
    """``value`` as page text: unprintable characters escaped, then HTML's specials."""
    return html.escape(escape(str(value)), quote=True)


def _table(headers: Iterable[str], rows: list[list[tuple[str, str]]], empty: str) -> str:
    """A table; each cell is (already escaped text, CSS class or "")."""
    if not rows:
        return f'<p class="empty">{_text(empty)}</p>\n'
    head = "".join(f"<th>{_text(header)}</th>" for header in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{css}">{cell}</td>' if css else f"<td>{cell}</td>" for cell, css in row
        )
        + "</tr>\n"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _plain(value: object) -> tuple[str, str]:
    return _text(value), ""


def _renamed(broker_vhost: str | None) -> str:
    """A mapping's MAP ... AS: the vhost the broker opens instead of the client's."""
    return "" if broker_vhost is None else f" AS {broker_vhost}"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def status_page(
    server: Server,
    collector: StatsCollector,
    *,
    ready: str | None,
    live: str | None,
    vhost_label: Callable[[str], str] = str,
    started: float | None = None,
    events: SessionMetrics | None = None,
) -> str:
    """The page's HTML. ``ready``/``live``: the probes' reasons (None: ok);
    ``vhost_label`` is /metrics' (a vhost no broker accepted shows as ``__other__``);
    ``started``: the process's start (epoch seconds), for its uptime; ``events``: the
    session events (connect failures per backend)."""
    routing = server.routing
    registry = server.health.registry
    sessions_by_backend: dict[str, int] = {}
    for session in server.sessions.values():
        if session.backend is not None:
            name = session.backend.name
            sessions_by_backend[name] = sessions_by_backend.get(name, 0) + 1

    def status(reason: str | None) -> tuple[str, str]:
        return ("ok", "ok") if reason is None else (_text(reason), "fail")

    summary = [
        [("ready (/readyz)", ""), status(ready)],
        [("live (/livez)", ""), status(live)],
        [_plain("sessions"), _plain(len(server.sessions))],
        [_plain("version"), _plain(__version__)],
    ]
    if started is not None:
        summary.append([_plain("up for"), _plain(f"{time.time() - started:.0f} s")])
    pool = server.pool_stats()
    if pool is not None:  # pooling mode in use (docs/pooling.md)
        summary.append(
            [
                _plain("pooled broker connections"),
                _plain(
                    f"{pool.links} ({pool.clients} clients, {pool.channels} channels, "
                    f"{pool.idle_channels} idle; {pool.links_opened} opened, "
                    f"{pool.clients_served} clients served)"
                ),
            ]
        )

    listeners = []
    for port in sorted(server.listeners):
        options = server.listen_options.get(port)
        allow = ", ".join(options.allow) if options is not None and options.allow else "anyone"
        listeners.append(
            [
                _plain(port),
                _plain("TLS" if port in server.secure_listeners else "plain"),
                # Who may send one (ACCEPT-PROXY FROM), or "no" for a port that takes none.
                _plain(
                    ", ".join(options.proxy_from)
                    if options is not None and options.proxy_from
                    else "no"
                ),
                _plain(allow),
            ]
        )

    now = _Traffic(collector, vhost_label)
    failures: dict[str, int] = {}
    for (backend_name, _reason), count in (events.connect_failures if events else {}).items():
        failures[backend_name] = failures.get(backend_name, 0) + count

    backends = []
    for name, backend in sorted(routing.backends.items()):
        state = registry.get(name)
        enabled = name not in routing.disabled
        if state is not None and state.down:
            health = (_text(f"down: {state.reason}"), "down")
        else:
            checked = state is not None and state.check is not None
            health = ("up (checked)" if checked else "up", "up")
        flags = [word for word, on in (("tls", backend.tls), ("dns", backend.dns)) if on]
        if backend.send_proxy:
            flags.append(f"send-proxy-v{backend.send_proxy}")
        backends.append(
            [
                _plain(name),
                _plain(backend.datacenter),
                _plain(endpoint((backend.host, backend.port))),
                _plain(" ".join(flags) or "-"),
                ("enabled", "up") if enabled else ("disabled", "off"),
                health,
                _plain(sessions_by_backend.get(name, 0)),
                *_rates_and_errors(now.backends.get(name), failures.get(name, 0)),
            ]
        )

    farms = []
    for name, farm in sorted(routing.farms.items()):
        policies = list(farm.policies)
        if name in server.health.disconnect_farms:
            policies.append("on_down disconnect")
        if farm.sticky is not None:
            policies.append(f"sticky {farm.sticky:g} s")
        farms.append(
            [
                _plain(name + (" (default)" if name == routing.default_farm else "")),
                _plain(farm.selector),
                _plain(
                    ", ".join(
                        f"{member}*{weight}" if farm.selector != "round-robin" else member
                        for member, weight in zip(farm.members, farm.weights, strict=True)
                    )
                    or "-"
                ),
                _plain(", ".join(policies) or "-"),
            ]
        )

    maps = [
        [_plain(vhost), _plain(f"{kind} {target}{_renamed(routing.renames.get(vhost))}")]
        # In matching order: exact vhosts, then patterns (``tenant-*``), most specific first.
        for vhost, (kind, target) in routing.mapping_order()
    ]
    if routing.default_farm is not None:
        maps.append([("<em>any other vhost</em>", ""), _plain(f"farm {routing.default_farm}")])

    rules = [
        [
            _plain(rule.priority),
            _plain(", ".join(rule.networks)),
            _plain(f"{rule.target[0]} {rule.target[1]}"),
            _plain(rule.on_down),
        ]
        for rule in routing.rules
    ]

    paused = [[_plain(vhost)] for vhost in sorted(server.vhosts.paused)]

    traffic: dict[str, list[int]] = {}
    for (vhost, _backend), total in collector.totals.items():
        row = traffic.setdefault(vhost_label(vhost), [0, 0])
        row[0] += total.bytes_received
        row[1] += total.bytes_sent
    active: dict[str, int] = {}
    for vhost, stats in collector.last.vhosts.items():
        label = vhost_label(vhost)
        active[label] = active.get(label, 0) + stats.active
    top = sorted(
        ((vhost, sums) for vhost, sums in traffic.items() if sum(sums)),
        key=lambda item: (-sum(item[1]), item[0]),
    )[:TOP_VHOSTS]
    vhosts = [
        [
            _plain(vhost or '""'),
            _plain(_bytes(sums[0])),
            _plain(_bytes(sums[1])),
            _plain(active.get(vhost, 0)),
            *_rates_and_errors(now.vhosts.get(vhost), None),
        ]
        for vhost, sums in top
    ]

    sections = [
        ("Status", _table(("what", "state"), summary, "")),
        (
            "Listeners",
            _table(("port", "transport", "PROXY header from", "allowed"), listeners, "no listener"),
        ),
        (
            "Backends",
            _table(
                (
                    "name",
                    "datacenter",
                    "address",
                    "flags",
                    "enabled",
                    "health",
                    "sessions",
                    *_RATE_HEADERS,
                    "connect failures",
                    "ended by error",
                ),
                backends,
                "no backend configured",
            ),
        ),
        (
            "Farms",
            _table(("name", "selector", "members", "policies"), farms, "no farm configured"),
        ),
        ("Vhost mappings", _table(("vhost", "routed to"), maps, "no mapping")),
        (
            "Client-address rules",
            _table(("priority", "networks", "narrowed to", "all down"), rules, "no rule"),
        ),
        ("Paused vhosts", _table(("vhost",), paused, "none")),
        (
            f"Top vhosts by traffic (top {TOP_VHOSTS}, since start)",
            _table(
                (
                    "vhost",
                    "client → broker",
                    "broker → client",
                    "active sessions",
                    *_RATE_HEADERS,
                    "ended by error",
                ),
                vhosts,
                "no traffic yet",
            ),
        ),
        (
            f"Top talkers (top {TOP_TALKERS} sessions by bytes per second, last interval)",
            _table(
                _TALKER_HEADERS, _top_talkers(server, collector), "no traffic in the last interval"
            ),
        ),
    ]
    body = "".join(f"<h2>{_text(title)}</h2>\n{table}" for title, table in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="{REFRESH}">\n'
        "<title>amqprouter status</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<h1>amqprouter status</h1>\n"
        f"{body}"
        f'<p class="empty">Refreshed every {REFRESH} s. Figures: /metrics.</p>\n'
        "</body>\n</html>\n"
    )


#: The rate columns of the backends and vhosts tables (over the last interval).
_RATE_HEADERS: Final = ("in/s", "out/s")


class _Traffic:
    """The last interval's traffic and the sessions ended by error since start, by
    backend name and by vhost label (summed from the collector's (vhost, backend) pairs)."""

    def __init__(self, collector: StatsCollector, vhost_label: Callable[[str], str]) -> None:
        interval = collector.last.interval or 1.0
        self.interval = interval
        self.backends: dict[str, list[float]] = {}
        self.vhosts: dict[str, list[float]] = {}
        for (vhost, name), stats in collector.last.pairs.items():
            self._add(name, vhost_label(vhost), _per_second(stats, interval), 0)
        for (vhost, name), totals in collector.totals.items():
            errors = totals.removed[Removal.BROKER_SNAPPED] + totals.removed[Removal.CLIENT_SNAPPED]
            self._add(name, vhost_label(vhost), (0.0, 0.0), errors)

    def _add(self, backend: str, vhost: str, rates: tuple[float, float], errors: int) -> None:
        for axis, key in ((self.backends, backend), (self.vhosts, vhost)):
            row = axis.setdefault(key, [0.0, 0.0, 0])
            row[0] += rates[0]
            row[1] += rates[1]
            row[2] += errors


def _per_second(stats: ConnectionStats, interval: float) -> tuple[float, float]:
    return stats.bytes_received / interval, stats.bytes_sent / interval


def _rate(value: float) -> str:
    return f"{_bytes(round(value))}/s"


def _rates_and_errors(
    row: list[float] | None, connect_failures: int | None
) -> list[tuple[str, str]]:
    """in/s, out/s, [connect failures,] ended by error: the cells after a row's own.

    Errors (a broker or a client gone or failing: the ``removedConnection*Snapped``
    figures) are counted since start, as HAProxy's stats page counts them.
    """
    in_rate, out_rate, errors = row if row is not None else (0.0, 0.0, 0)
    cells = [_plain(_rate(in_rate)), _plain(_rate(out_rate))]
    if connect_failures is not None:
        cells.append((_text(connect_failures), "fail" if connect_failures else ""))
    cells.append((_text(int(errors)), "fail" if errors else ""))
    return cells


_TALKER_HEADERS: Final = (
    "session",
    "vhost",
    "client address",
    "backend",
    "user",
    "connection name",
    "client library",
    "in/s",
    "out/s",
    "frames in/s",
    "frames out/s",
)


def _top_talkers(server: Server, collector: StatsCollector) -> list[list[tuple[str, str]]]:
    """The ``TOP_TALKERS`` sessions that moved the most bytes (both ways) per second in
    the last interval; idle ones are left out."""
    busy = []
    for session in server.sessions.values():
        rates = collector.session_rates(session.id)
        if rates is not NO_RATES and rates.in_bytes + rates.out_bytes > 0:
            busy.append((rates.in_bytes + rates.out_bytes, session.id, session, rates))
    busy.sort(key=lambda item: (-item[0], item[1]))
    rows = []
    for _total, _id, session, rates in busy[:TOP_TALKERS]:
        identity = session.identity
        library = " ".join(part for part in (identity.product, identity.version) if part)
        rows.append(
            [
                _plain(session.id),
                _plain(session.vhost or '""'),
                _plain(endpoint(session.client_address)),
                _plain("-" if session.backend is None else session.backend.name),
                _plain(identity.user or "-"),
                _plain(bounded(session.connection_name) or "-"),
                _plain(library or "-"),
                _plain(_rate(rates.in_bytes)),
                _plain(_rate(rates.out_bytes)),
                _plain(f"{rates.in_frames:.0f}"),
                _plain(f"{rates.out_frames:.0f}"),
            ]
        )
    return rows
