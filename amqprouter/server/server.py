"""The server: listeners, the live routing snapshot and the registry of sessions."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final, Literal

import attrs
import structlog
import trio

from amqprouter.net import sockets
from amqprouter.net.engine import Engine
from amqprouter.net.hostnames import HostnameMapper
from amqprouter.net.resolver import Resolver
from amqprouter.net.tls_context import TlsState, missing
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.routing import Backend, RoutingTable
from amqprouter.routing.health import DOWN_SECONDS, HealthRegistry
from amqprouter.routing.rate_window import BURST_SECONDS, DataBudget
from amqprouter.server.admission import ListenOptions, RefusalLog
from amqprouter.server.auth import AuthService
from amqprouter.server.capacity import Capacity
from amqprouter.server.drain import Drained, who
from amqprouter.server.edges import Edges
from amqprouter.server.health import HealthMonitor
from amqprouter.server.limits import Limits, Refusal
from amqprouter.server.listener import accept_loop, bind_listener, resolve_listen_address
from amqprouter.server.primed import PrimedPool, prime_connection
from amqprouter.server.probe import probe_backend
from amqprouter.server.vhosts import VhostStates
from amqprouter.session import End, Session, SessionSettings
from amqprouter.session.connect import StartClient, WrapBackend
from amqprouter.session.context import Admitted, Refused, SessionContext
from amqprouter.session.metrics_hooks import SessionEvents
from amqprouter.session.pool import Pool, PoolFigures, PoolLimits
from amqprouter.session.trace import Trace
from amqprouter.session.watch import Watchdog

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.server")

#: The data plane of established sessions: ``engine`` (net/engine.py) or ``tasks``
#: (each session's own pumps).
Forwarding = Literal["engine", "tasks"]


class TlsNotConfigured(Exception):
    """LISTEN START_SECURE before TLS INGRESS has a certificate and a key."""


#: SIGTERM and EXIT GRACEFUL wait this long for sessions to close gracefully; the
#: rest are then cut. Longer than a graceful disconnect's own bound (5 s).
SHUTDOWN_TIMEOUT: Final = 10.0
#: Primed broker connections kept at most per backend in use (--primed-connections).
#: Off by default: they pay off with a broker a network round trip away, and cost the
#: router CPU per connection with one on the same host (docs/usage.md, the figures).
PRIMED_PER_BACKEND: Final = 0
#: A listener without options: no PROXY header, anyone may connect.
PLAIN_LISTENER: Final = ListenOptions()


class Server:
    """Owns every session and listener of one router process.

    ``routing`` is replaced whole (never mutated) when the configuration changes;
    sessions read it once, when their client's Connection.Open arrives.
    """

    def __init__(
        self,
        settings: SessionSettings,
        routing: RoutingTable | None = None,
        *,
        backend_down_seconds: float = DOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        primed_per_backend: int = PRIMED_PER_BACKEND,
        max_connections: int = 0,
        data_rate_burst: float = BURST_SECONDS,
        forwarding: Forwarding = "engine",
        pool: bool = False,
        pool_limits: PoolLimits | None = None,
    ) -> None:
        self.settings = settings
        #: ``--forwarding engine`` (the default): one thread forwards every established
        #: plain session (net/engine.py), owned by a task of this server's nursery; None
        #: with ``tasks``.
        self.engine = Engine() if forwarding == "engine" else None
        #: Per-listener connection caps, the control socket's descriptor reserve and the
        #: shedding of silent clients (capacity.py); ``max_connections`` 0 derives the cap.
        self.capacity = Capacity(max_connections)
        self._routing = routing or RoutingTable()
        self.resolver = Resolver()
        #: Backend health (failed connects, BACKEND CHECK) and the farm policies on it.
        self.health = HealthMonitor(
            HealthRegistry(down_seconds=backend_down_seconds),
            routing=self.current_routing,
            # The probe connects as a session does, through the same wrap (TLS,
            # SEND-PROXY), or a TLS or proxy_protocol broker would refuse it.
            probe=partial(probe_backend, self.resolver, wrap=self._probe_wrap),
            disconnect=lambda name, reason: self.disconnect_backend(
                name, graceful=True, reason=reason
            ),
        )
        self.sessions: dict[int, Session] = {}
        #: Listeners bind with SO_REUSEPORT: set in a worker of ``--workers``, whose
        #: siblings listen on the same ports (amqprouter/fleet/).
        self.reuse_port = False
        self.listeners: dict[int, trio.CancelScope] = {}
        #: Set by MAPHOSTNAME DNS: host names instead of addresses in CONN and in the
        #: amqprouter_client property (looked up in the background, never waited for).
        self.hostnames: HostnameMapper | None = None
        #: Called with each session once it has left ``sessions`` (statistics count its
        #: last interval's traffic and why it ended). Must not raise or block.
        self.session_ended: list[Callable[[Session], None]] = []
        #: VHOST PAUSE/UNPAUSE/PRINT state (runtime, not configuration).
        self.vhosts = VhostStates()
        #: VHOST TRACE: the traces on each vhost, which its sessions join as they start
        #: forwarding (runtime; a stopped trace is forgotten when next looked up).
        self.vhost_traces: dict[str, list[Trace]] = {}
        #: LIMIT: connection rates, concurrent connections and data rates (limits.py).
        self.limits = Limits(burst_seconds=data_rate_burst)
        #: The TLS settings and contexts of both directions (the TLS verb changes them;
        #: a session takes the context of the moment it starts).
        self.tls = TlsState()
        #: The listeners that serve TLS (LISTEN START_SECURE), a subset of ``listeners``.
        self.secure_listeners: set[int] = set()
        #: Each listener's ACCEPT-PROXY and ALLOW options (LISTEN START ... writes them).
        self.listen_options: dict[int, ListenOptions] = {}
        #: Clients refused by an ALLOW list: counted, and logged at most once a second
        #: per address.
        self.refusals = RefusalLog()
        #: The PROXY and TLS hooks of listeners and backends (edges.py).
        self.edges = Edges(self.tls, self.refusals)
        #: Heartbeat and write-timeout supervision of every forwarding session.
        #: ``clock`` is also the sessions' clock for their idle times (tests pass trio's).
        self.watchdog = Watchdog(clock)
        # AUTH SERVICE (``auth``): the auth service each new session asks; None is AUTH
        # ALWAYS_ALLOW.
        self._auth: AuthService | None = None
        #: Broker connections greeted ahead of their clients (primed.py);
        #: ``primed_per_backend`` 0 turns it off.
        self.primed = PrimedPool(self._prime, self._primable, max_per_backend=primed_per_backend)
        #: What every new session is given of this server (session/context.py); built
        #: once, and built anew when ``auth``, ``events`` or ``wrap_backend`` is set.
        #: Pooling mode (session/pool.py): shared broker connections, for every vhost
        #: with ``pool`` (--pool), else for the vhosts MAP POOL turns on.
        self.pool = Pool(pool_limits)
        self.pool_default = pool
        self.context = SessionContext(
            settings=settings,
            routing=self.current_routing,
            resolver=self.resolver,
            health=self.health.registry,
            host_name=self.host_name,
            vhost_opened=self.vhosts.opened,
            admit=self._admit,
            # TLS and a PROXY header for backends flagged so; None connects plain.
            wrap_backend=self.edges.wrap_backend,
            watchdog=self.watchdog,
            take_primed=self.primed.take if self.primed.enabled else None,
            engine=self.engine,
            vhost_traces=self.traces_on,
            pool=self.pool,
            pooled=self.pooled,
        )
        self._nursery: trio.Nursery | None = None
        # Set when the last session ends, while a drain waits for that.
        self._emptied: trio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; sessions and listeners live in this nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.health.start(nursery)
            nursery.start_soon(self.watchdog.run)
            nursery.start_soon(self.capacity.run)
            if self.engine is not None:
                # Ends with the server: its sessions are handed back to the task path.
                await nursery.start(self.engine.run)
            if self.primed.enabled:
                await nursery.start(self.primed.run)
            await nursery.start(self.pool.run)
            task_status.started()
            await trio.sleep_forever()

    @property
    def auth(self) -> AuthService | None:
        """AUTH SERVICE: the auth service each new session asks; None is ALWAYS_ALLOW."""
        return self._auth

    @auth.setter
    def auth(self, service: AuthService | None) -> None:
        self._auth = service
        authorize = None if service is None else service.authorize
        self.context = attrs.evolve(self.context, authorize=authorize)

    @property
    def events(self) -> SessionEvents:
        """Told of each session's handshake and connect latencies and failed connects
        (session/metrics_hooks.py); /metrics sets its observer here."""
        return self.context.events

    @events.setter
    def events(self, events: SessionEvents) -> None:
        self.context = attrs.evolve(self.context, events=events)

    @property
    def wrap_backend(self) -> WrapBackend | None:
        """Wraps every backend connection, primed ones too (session/connect.py)."""
        return self.context.wrap_backend

    @wrap_backend.setter
    def wrap_backend(self, wrap: WrapBackend | None) -> None:
        self.context = attrs.evolve(self.context, wrap_backend=wrap)

    def map_hostnames(self) -> None:
        """Start naming hosts by reverse DNS (idempotent)."""
        assert self._nursery is not None, "Server.run() must be started first"
        if self.hostnames is None:
            self.hostnames = HostnameMapper(self._nursery, resolver=self.resolver)

    def host_name(self, ip: str) -> str:
        """``ip``'s name once known (after MAPHOSTNAME DNS), else ``ip``; never waits."""
        return ip if self.hostnames is None else self.hostnames.name_for(ip)

    def backend_up(self) -> dict[str, bool]:
        """Every configured backend's health now: name → up (for /metrics, /healthz)."""
        down = self.health.registry.down()
        return {name: name not in down for name in self.routing.backends}

    def pool_stats(self) -> PoolFigures | None:
        """Pooling mode's figures; None while it has never been in use (no --pool, no
        MAP POOL ON, no pooled connection ever), so STAT stays as it was without it."""
        if self.pool_default or self.pool.links_opened or any(self._routing.pools.values()):
            return self.pool.stats()
        return None

    def pooled(self, vhost: str) -> bool:
        """Whether ``vhost``'s clients are pooled: MAP POOL's word, else ``--pool``."""
        return self._routing.pools.get(vhost, self.pool_default)

    def current_routing(self) -> RoutingTable:
        return self._routing

    @property
    def routing(self) -> RoutingTable:
        """The live routing snapshot; replaced whole by the control plane."""
        return self._routing

    @routing.setter
    def routing(self, table: RoutingTable) -> None:
        self._routing = table
        self.primed.wake()  # a backend disabled, deleted or moved: drop its primed ones now

    def _primable(self, backend: Backend) -> bool:
        """Whether primed connections to ``backend`` may be kept and handed out now."""
        table = self._routing
        return (
            table.backends.get(backend.name) == backend
            and backend.name not in table.disabled
            and backend.name not in self.health.registry.down()
        )

    async def _prime(self, backend: Backend) -> Transport:
        timeouts = self.settings.timeouts
        return await prime_connection(
            self.resolver,
            backend,
            connect_timeout=timeouts.connect,
            greeting_timeout=timeouts.broker_handshake,
            wrap=self.wrap_backend,
        )

    async def listen(
        self,
        port: int,
        host: str = "",
        start: StartClient | None = None,
        options: ListenOptions = PLAIN_LISTENER,
    ) -> int:
        """Start listening on ``port`` (0 picks a free one); returns the bound port.

        ``start`` finishes opening each accepted client's transport (a TLS handshake),
        inside the client handshake timeout; None serves plain AMQP. ``options``: a
        PROXY header read first (before ``start``), and who is allowed in.
        """
        assert self._nursery is not None, "Server.run() must be started first"
        if port in self.listeners:
            log.info("already listening", port=port)
            return port
        sock = bind_listener(
            port, await resolve_listen_address(host, port), reuse_port=self.reuse_port
        )
        bound = int(sock.getsockname()[1])
        scope = trio.CancelScope()
        self.listeners[bound] = scope
        self.listen_options[bound] = options
        if options.accept_proxy:
            start = partial(self.edges.start_proxied_client, bound, options, start)

        def on_client(client: socket.socket) -> None:
            # The socket's peer is checked now, before a byte is read: against ALLOW on
            # a plain port, against FROM on an ACCEPT-PROXY one (only a balancer may name
            # the client; the header's source is checked against ALLOW once read).
            if options.checks_peer:
                client_host, client_port = sockets.peer_name(client)
                refusal = options.peer_refusal(client_host)
                if refusal is not None:
                    sockets.close_socket(client)
                    self.refusals.refused(client_host, client_port, bound, refusal)
                    return
            self._start_session(client, bound, start)

        async def serve() -> None:
            with scope:
                await accept_loop(sock, on_client, self.capacity.gate(bound))
            self._forget_listener(bound)

        self._nursery.start_soon(serve)
        log.info(
            "listening",
            port=bound,
            accept_proxy=options.accept_proxy,
            allow=list(options.allow),
            max_connections=self.capacity.max_connections,
        )
        return bound

    async def listen_secure(
        self, port: int, host: str = "", options: ListenOptions = PLAIN_LISTENER
    ) -> int:
        """Start a TLS listener on ``port``; the bound port.

        Each client's TLS handshake runs inside the client handshake timeout, with the
        INGRESS context of the moment it connected (after the PROXY header, if
        ``options`` accept one: a balancer sends it in clear).

        Raises:
            TlsNotConfigured: TLS INGRESS lacks a certificate or key.
            OSError: the port cannot be bound.
        """
        lacking = missing(self.tls.settings("INGRESS"))
        if lacking:
            raise TlsNotConfigured(f"TLS INGRESS needs {' and '.join(lacking)} first")
        bound = await self.listen(port, host, start=self.edges.start_tls_client, options=options)
        self.secure_listeners.add(bound)
        return bound

    async def _probe_wrap(
        self, backend: Backend, transport: Transport, client: tuple[str, int] | None
    ) -> Transport:
        """The health probe's wrap: the sessions' of the moment (None: plain)."""
        wrap = self.wrap_backend
        return transport if wrap is None else await wrap(backend, transport, client)

    def stop_listening(self, port: int | None = None) -> None:
        """Stop one listener, or all; existing sessions are not touched."""
        for bound, scope in list(self.listeners.items()):
            if port is None or port == bound:
                scope.cancel()
                self._forget_listener(bound)

    def _forget_listener(self, port: int) -> None:
        self.listeners.pop(port, None)
        self.secure_listeners.discard(port)
        self.listen_options.pop(port, None)

    def disconnect_backend(self, name: str, *, graceful: bool, reason: str) -> int:
        """Disconnect every session connected to backend ``name``; how many were asked.

        ``graceful``: Close(320, ``reason``) to the client and the close handshake with
        both sides, bounded in time; else both sockets are cut at once. Used by BACKEND
        DRAIN and by health policies.
        """
        how = End.OPERATOR if graceful else End.OPERATOR_FORCED
        sessions = [
            s for s in self.sessions.values() if s.backend is not None and s.backend.name == name
        ]
        return sum(session.disconnect(how, reason) for session in sessions)

    def vhost_sessions(self, vhost: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.vhost == vhost]

    async def drain(self, deadline: float = SHUTDOWN_TIMEOUT) -> Drained:
        """Stop listening, disconnect every session gracefully, wait ``deadline`` s.

        Sessions still there at the deadline are cut. Returns how many closed cleanly,
        how many clients were cut for not answering the Close (``--disconnect-timeout``)
        and how many were cut at the deadline; the log line names every one cut.
        """
        self.stop_listening()
        sessions = list(self.sessions.values())
        log.info("draining", sessions=len(sessions), deadline=deadline)
        for session in sessions:
            session.disconnect(End.OPERATOR, "router shutting down")
        self._emptied = trio.Event()
        with trio.move_on_after(deadline):
            while self.sessions:
                await self._emptied.wait()
        left = list(self.sessions.values())
        for session in left:
            session.disconnect(End.OPERATOR_FORCED, "router shutting down: drain deadline")
        at_deadline = {s.id for s in left}
        unanswered = [s for s in sessions if s.id not in at_deadline and s.client_cut is not None]
        outcome = Drained(len(sessions) - len(left) - len(unanswered), len(unanswered), len(left))
        log.info(
            "drained",
            drained=outcome.drained,
            cut_at_disconnect_timeout=outcome.cut_unanswered,
            cut_at_deadline=outcome.cut_at_deadline,
            **({"cut": [who(s) for s in unanswered + left]} if unanswered or left else {}),
        )
        return outcome

    def _start_session(
        self, client: socket.socket, listen_port: int, start: StartClient | None
    ) -> None:
        assert self._nursery is not None
        session = Session(
            PlainTransport(client),
            self.context,
            listen_port=listen_port,
            start=start,
            # The DEFAULT data rate holds from accept; the vhost's replaces it at Open.
            data_budget=self.limits.data_budget(None),
        )
        self.sessions[session.id] = session
        self.capacity.opened(session)
        self._nursery.start_soon(session.run, self._session_ended)

    def traces_on(self, vhost: str) -> list[Trace]:
        """The VHOST TRACEs on ``vhost`` still running (a session starting to forward
        asks); the stopped ones are forgotten here."""
        traces = self.vhost_traces.get(vhost)
        if not traces:
            return []
        live = [t for t in traces if t.stopped is None]
        if live:
            self.vhost_traces[vhost] = live
        else:
            del self.vhost_traces[vhost]
        return live

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` in the server's nursery (a trace or capture file's writer): it
        ends with the server at the latest."""
        assert self._nursery is not None, "Server.run() must be started first"
        self._nursery.start_soon(task)

    def _admit(self, session_id: int, vhost: str) -> Admitted | Refused:
        """The sessions' Connection.Open hook: the LIMIT checks, then the vhost's data rate."""
        admission = self.limits.admit(session_id, vhost)
        if isinstance(admission, Refusal):
            return Refused(admission.reply_code, admission.reply_text)
        return Admitted(alarmed=admission.alarmed, data_budget=self.limits.data_budget(vhost))

    def apply_data_limits(self, vhost: str | None) -> int:
        """A DATA_RATE[_ALARM] setting of ``vhost`` (None: DEFAULT) changed: give the live
        sessions it governs a new budget. Returns how many sessions that was."""
        changed = 0
        for session in self.sessions.values():
            if vhost is None or session.vhost == vhost:
                budget = self.limits.data_budget(session.vhost)
                if budget is None and session.data_budget is not None:
                    # The pump may be using the old one's smaller reads: an inert budget
                    # tells it to go back to full reads and drop the budget.
                    budget = DataBudget(None, None)
                if session.data_budget is not None and session.data_budget.alarmed:
                    session.alarmed = True  # the old budget's alarm still counts
                session.data_budget = budget
                changed += 1
        return changed

    def _session_ended(self, session: Session) -> None:
        """A session closed (called at the end of its ``run``): forget it."""
        del self.sessions[session.id]
        self.capacity.closed(session)
        self.limits.release(session.id)
        if not self.sessions and self._emptied is not None:
            self._emptied.set()
        for callback in self.session_ended:
            try:
                callback(session)
            except Exception:  # one broken observer must not end the server
                log.exception("session-ended callback failed", session=session.id)
