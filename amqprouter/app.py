"""The composition root: a running router's parts, started together and stopped together.

``serve`` starts the server, the statistics loop, the HTTP endpoints and the control
socket in one nursery, applies the start-up commands (simple mode, TLS flags,
``--config``) through the controller as an operator's would be, and runs until
SIGINT, SIGTERM or EXIT; SIGHUP reloads (control/reload.py). ``cli`` turns flags
into its arguments; nothing else imports this module.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import click
import structlog
import trio

from amqprouter.control.controller import Controller
from amqprouter.control.reload import Reloader
from amqprouter.control.socket_server import ControlSocketError, Reply, serve_control
from amqprouter.fleet.role import (
    WorkerRole,
    announce_ready,
    become_worker,
    retire,
    startup_lines,
    watch_supervisor,
)
from amqprouter.observe import prometheus
from amqprouter.observe.http import Response, serve_http
from amqprouter.observe.probes import LoopHeartbeat
from amqprouter.observe.process import process_figures
from amqprouter.observe.render import DEFAULT_PREFIX
from amqprouter.observe.service import StatsService
from amqprouter.observe.stats import StatsCollector
from amqprouter.observe.status_page import CONTENT_TYPE as HTML
from amqprouter.observe.status_page import status_page
from amqprouter.server import Server
from amqprouter.server.server import SHUTDOWN_TIMEOUT
from amqprouter.server.sticky_file import keep_saved
from amqprouter.systemd_notify import READY, RELOADING, STOPPING, notify
from amqprouter.text import escape

if TYPE_CHECKING:
    from amqprouter.fleet.config_store import ConfigStore

log = structlog.get_logger("amqprouter")

EXIT_LISTEN_FAILED = 4
EXIT_CONTROL_SOCKET_IN_USE = 5
EXIT_CONFIG_FAILED = 6
EXIT_HTTP_FAILED = 7

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
    """Collect over ``server``'s sessions every ``interval`` seconds, in ``nursery``; and
    count session events (``service.events``, the server's observer) from now on."""
    collector = StatsCollector(server.sessions, interval)
    server.session_ended.append(collector.session_ended)
    service = StatsService(collector, statsd_prefix=statsd_prefix)
    service.pool_state = server.pool_stats
    server.events = service.events
    server.session_ended.append(service.events.session_ended)
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
    note: Callable[[], str | None] = lambda: None,
    extra_metrics: Callable[[], str] = lambda: "",
) -> list[int]:
    """Serve ``/metrics``, the probes (``/livez``, ``/readyz``, ``/healthz``) and the
    status page ``/`` on ``port``; the bound ports.

    Raises:
        OSError: the port cannot be bound.
    """
    events = service.events
    heartbeat = LoopHeartbeat()
    await nursery.start(heartbeat.run)
    started = process_figures().start_time_seconds

    def vhost_label() -> Callable[[str], str]:
        return prometheus.vhost_labeller(events.routed, server.routing.mappings)

    def metrics_page() -> str:
        return (
            prometheus.metrics_text(
                service.collector,
                listeners=len(server.listeners),
                # Only a checked backend has up/down evidence worth a series (statistics.md).
                backend_up={
                    name: up
                    for name, up in (backend_health() or {}).items()
                    if name in server.health.checks
                },
                refused=server.refusals.total,
                shed=server.capacity.shed_total,
                events=events,
                vhost_label=vhost_label(),
                paused_vhosts=len(server.vhosts.paused),
                primed=(server.primed.stats, server.primed.ready())
                if server.primed.enabled
                else None,
                pool=server.pool_stats(),
                tls_expiry=prometheus.tls_expiries(server.tls),
            )
            + extra_metrics()
        )

    def ready() -> str | None:
        return prometheus.ready_reason(
            listeners=len(server.listeners),
            backends=len(server.routing.backends),
            backend_up=backend_health(),
            disabled=server.routing.disabled,
        )

    def status() -> Response:
        page = status_page(
            server,
            service.collector,
            ready=ready(),
            live=heartbeat.stalled(),
            vhost_label=vhost_label(),
            started=started,
            events=events,
        )
        return Response(200, page, HTML)

    def readiness() -> Response:
        # ``note``: what the operator should know even when ready (a configuration
        # store away: serving, with the last configuration).
        response = prometheus.probe(ready)
        extra = note()
        return response if extra is None else Response(response.status, f"{response.body}{extra}\n")

    routes: dict[str, Callable[[], Response]] = {
        "/": status,
        "/metrics": partial(prometheus.metrics, metrics_page),
        "/livez": partial(prometheus.probe, heartbeat.stalled),
        "/readyz": readiness,
        # The name it has always had: the readiness check, unchanged.
        "/healthz": readiness,
    }
    ports: list[int] = await nursery.start(partial(serve_http, port, routes, host=host))
    return ports


def announce_listeners(server: Server) -> None:
    """One stdout line per listener once start-up is done, beside the Starting line.

    The console log is FATAL-only by default, so this is what tells someone who just
    ran the README's command that clients can connect now, and where.
    """
    for port in sorted(server.listeners):
        kind = "TLS" if port in server.secure_listeners else "AMQP"
        click.echo(f"Listening for {kind} clients on port {port} (every address)")


@attrs.frozen
class Observe:
    """Statistics and HTTP endpoint settings (--cleanup-interval-ms, --statsd-*, --http-*)."""

    interval: float = 1.0
    statsd_prefix: str = DEFAULT_PREFIX
    http_port: int | None = None
    http_host: str | None = None


async def serve(
    server: Server,
    control_socket: Path,
    mode: int,
    setup: list[tuple[str, str]],
    observe: Observe = Observe(),
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    config_file: Path | None = None,
    worker: WorkerRole | None = None,
    config_store: tuple[str, str] | None = None,
    sticky_file: Path | None = None,
) -> int:
    """Run until SIGINT, SIGTERM or EXIT (graceful or not); the exit code.

    ``config_file`` is the ``--config`` file whose lines are in ``setup``: SIGHUP and
    CONFIG RELOAD read it again. ``worker``: this process is a worker of ``--workers``
    (amqprouter/fleet/): its HTTP port (``observe``'s, 0 on the loopback) is told to
    the supervisor in its ready file once the start-up commands are applied.
    ``config_store`` (a ``redis://`` URL and a key prefix): the configuration is shared
    through Redis (amqprouter/fleet/config_store.py), joined once the start-up commands
    are applied. ``sticky_file`` (``--sticky-file``) is kept up to date
    with the sticky clients until the end (``server.sticky_file``).
    """
    store: ConfigStore | None = None

    async def handle(line: str, *, as_json: bool = False) -> Reply:
        # Through the store once there is one: a configuration change goes to Redis.
        if store is not None:
            return await store.handle(line, as_json=as_json)
        return await controller.handle(line, as_json=as_json)

    def store_note() -> str | None:
        return None if store is None else store.status()

    def store_metrics() -> str:
        return "" if store is None else store.metrics()

    if worker is not None:
        become_worker(worker, server)
    if config_store is not None:
        # The listeners are shared configuration: routers on one host (two containers
        # with the host's network, a new version beside the old) share their ports.
        server.reuse_port = True
    http_ports: list[int] = []
    stop = trio.Event()
    # Set to the drain deadline (seconds) by SIGTERM or EXIT GRACEFUL.
    drain_for: list[float] = []
    drained = trio.CancelScope()  # cancelled to stop at once, even mid-drain

    def request_drain(seconds: float | None) -> None:
        if not stop.is_set():
            drain_for.append(shutdown_timeout if seconds is None else seconds)
        stop.set()

    def stop_now() -> None:
        drained.cancel()
        stop.set()

    # SIGHUP is received from the start: one that comes during start-up waits for it
    # to finish, instead of killing the process (its default action).
    # A worker of --workers is also told to retire (a restart for new code): SIGUSR2.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    retiring: list[bool] = []
    with trio.open_signal_receiver(
        *handled, *((signal.SIGUSR2,) if worker is not None else ())
    ) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            if sticky_file is not None:
                nursery.start_soon(keep_saved, sticky_file, lambda: server.routing.sticky)
            stats = await start_stats(
                nursery, server, interval=observe.interval, statsd_prefix=observe.statsd_prefix
            )
            controller = Controller(
                server,
                request_exit=stop_now,
                request_drain=request_drain,
                stats=stats,
            )
            if observe.http_port is not None:
                try:
                    http_ports = await start_http(
                        nursery,
                        server,
                        stats,
                        port=observe.http_port,
                        host=observe.http_host,
                        backend_health=server.backend_up,
                        note=store_note,
                        extra_metrics=store_metrics,
                    )
                except OSError as exc:
                    click.echo(
                        f"Cannot serve HTTP on port {observe.http_port}: {exc.strerror or exc}",
                        err=True,
                    )
                    nursery.cancel_scope.cancel()
                    return EXIT_HTTP_FAILED
            try:
                await nursery.start(
                    partial(
                        serve_control,
                        control_socket,
                        handle,
                        mode=mode,
                        reserve=server.capacity.reserve,
                    )
                )
            except ControlSocketError as exc:  # in use, or in an unsafe directory
                click.echo(f"Cannot use the control socket: {exc}", err=True)
                nursery.cancel_scope.cancel()
                return EXIT_CONTROL_SOCKET_IN_USE
            except OSError as exc:  # a missing directory, no permission, a path too long
                click.echo(
                    f"Cannot use the control socket: {control_socket}: {exc.strerror or exc}",
                    err=True,
                )
                nursery.cancel_scope.cancel()
                return EXIT_CONTROL_SOCKET_IN_USE
            for source, line in setup if worker is None else startup_lines(worker, setup):
                reply = await controller.handle(line)
                if reply.after is not None:
                    reply.after()  # EXIT in a --config file
                if not reply.ok:
                    if source == "simple mode":
                        click.echo(reply.text.rstrip("\n"), err=True)
                        code = EXIT_LISTEN_FAILED
                    else:
                        # The line as the operator wrote it, but never a raw control.
                        click.echo(f"{source}: {escape(line)}: {reply.text.rstrip()}", err=True)
                        code = EXIT_CONFIG_FAILED
                    nursery.cancel_scope.cancel()
                    return code
            # What the file configured, as a reload will compare it (all of it applied).
            controller.reloader = Reloader(config_file, setup)
            controller.reloader.started(server.tls)
            if config_store is not None:
                # Imported only here: coredis is the optional extra "fleet".
                from amqprouter.fleet.config_store import ConfigStore

                store = ConfigStore(config_store[0], controller, prefix=config_store[1])
                stats.store_state = store.state
                await nursery.start(store.run)
            if worker is not None:
                announce_ready(worker, http_ports[0] if http_ports else 0)
            else:
                announce_listeners(server)
            notify(READY, f"STATUS=listening on {len(server.listeners)} port(s)")

            async def reload_on_signal() -> None:
                # systemd's ExecReload waits for READY=1 after RELOADING=1.
                notify(RELOADING)
                try:
                    if store is not None:  # the result goes to every router
                        reply = await store.handle("CONFIG RELOAD")
                        if not reply.ok:
                            log.warning("reload not shared", reply=reply.text.strip())
                    else:
                        await controller.reload("SIGHUP")
                finally:
                    notify(READY)

            async def on_signal() -> None:
                async for number in signals:
                    if number == signal.SIGHUP:
                        # Its own task: a reload resolving a backend's host must not
                        # hold up a SIGTERM behind it. Reloads still run one at a time.
                        nursery.start_soon(reload_on_signal)
                    elif number == signal.SIGTERM and not stop.is_set():
                        request_drain(None)
                    elif number == signal.SIGUSR2:
                        if not stop.is_set():
                            retiring.append(True)
                            request_drain(None)
                    else:  # SIGINT, or a second signal during a drain: at once
                        stop_now()

            nursery.start_soon(on_signal)
            if worker is not None:
                nursery.start_soon(watch_supervisor)
            await stop.wait()
            notify(STOPPING)
            if drain_for:
                stats.events.shutting_down = True
                with drained:
                    if retiring:  # sessions go on until the deadline, then a 320
                        await retire(server, drain_for[0])
                    else:
                        await server.drain(drain_for[0])
            nursery.cancel_scope.cancel()
    return 0
