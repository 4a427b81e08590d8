"""Starting the statistics loop and the HTTP endpoints inside a running router."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import trio

from amqprouter.observe import prometheus
from amqprouter.observe.http import serve_http
from amqprouter.observe.render import DEFAULT_PREFIX
from amqprouter.observe.service import StatsService
from amqprouter.observe.stats import StatsCollector
from amqprouter.server import Server

#: Where the health monitor's view comes from: backend name → up, or None (no monitor).
BackendHealth = Callable[[], Mapping[str, bool] | None]


def _no_health() -> Mapping[str, bool] | None:
    return None


async def start_stats(
    nursery: trio.Nursery,
    server: Server,
    *,
    interval: float,
    statsd_prefix: str = DEFAULT_PREFIX,
) -> StatsService:
    """Collect over ``server``'s sessions every ``interval`` seconds, in ``nursery``."""
    collector = StatsCollector(server.sessions, interval)
    server.session_ended.append(collector.session_ended)
    service = StatsService(collector, statsd_prefix=statsd_prefix)
    await nursery.start(service.run)
    return service


async def start_http(
    nursery: trio.Nursery,
    server: Server,
    service: StatsService,
    *,
    port: int,
    host: str | None = None,
    backend_health: BackendHealth = _no_health,
) -> list[int]:
    """Serve ``/metrics`` and ``/healthz`` on ``port``; the bound ports.

    Raises:
        OSError: the port cannot be bound.
    """

    def metrics_page() -> str:
        return prometheus.metrics_text(
            service.collector,
            listeners=len(server.listeners),
            backend_up=backend_health(),
        )

    def reason() -> str | None:
        return prometheus.health_reason(
            listeners=len(server.listeners),
            backends=len(server.routing.backends),
            backend_up=backend_health(),
            disabled=server.routing.disabled,
        )

    routes = {
        "/metrics": partial(prometheus.metrics, metrics_page),
        "/healthz": partial(prometheus.healthz, reason),
    }
    ports: list[int] = await nursery.start(partial(serve_http, port, routes, host=host))
    return ports
