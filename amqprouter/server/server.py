"""The server: listeners, the live routing snapshot and the registry of sessions."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import structlog
import trio

from amqprouter.net.tls_context import TlsState, missing
from amqprouter.net.tls_transport import TlsHandshakeError, tls_handshake
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.routing import Backend, Resolver, RoutingTable
from amqprouter.routing.health import DOWN_SECONDS, HealthRegistry
from amqprouter.routing.hostnames import HostnameMapper
from amqprouter.server.auth import AuthService
from amqprouter.server.health import HealthMonitor
from amqprouter.server.listener import accept_loop, bind_listener, resolve_listen_address
from amqprouter.server.probe import probe_backend
from amqprouter.server.vhosts import VhostStates
from amqprouter.session import End, Session, SessionSettings
from amqprouter.session.connect import StartClient, WrapBackend
from amqprouter.session.watch import Watchdog

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.server")


class TlsNotConfigured(Exception):
    """LISTEN START_SECURE before TLS INGRESS has a certificate and a key."""


#: SIGTERM and EXIT GRACEFUL wait this long for sessions to close gracefully; the
#: rest are then cut. Longer than a graceful disconnect's own bound (5 s).
SHUTDOWN_TIMEOUT: Final = 10.0


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
    ) -> None:
        self.settings = settings
        self.routing = routing or RoutingTable()
        self.resolver = Resolver()
        #: Backend health (failed connects, BACKEND CHECK) and the farm policies on it.
        self.health = HealthMonitor(
            HealthRegistry(down_seconds=backend_down_seconds),
            routing=self.current_routing,
            probe=partial(probe_backend, self.resolver),
            disconnect=lambda name, reason: self.disconnect_backend(
                name, graceful=True, reason=reason
            ),
        )
        self.sessions: dict[int, Session] = {}
        self.listeners: dict[int, trio.CancelScope] = {}
        #: Set by MAPHOSTNAME DNS: host names instead of addresses in CONN and in the
        #: amqprouter_client property (looked up in the background, never waited for).
        self.hostnames: HostnameMapper | None = None
        #: Called with each session once it has left ``sessions`` (statistics count its
        #: last interval's traffic and why it ended). Must not raise or block.
        self.session_ended: list[Callable[[Session], None]] = []
        #: VHOST PAUSE/UNPAUSE/PRINT state (runtime, not configuration).
        self.vhosts = VhostStates()
        #: The TLS settings and contexts of both directions (the TLS verb changes them;
        #: a session takes the context of the moment it starts).
        self.tls = TlsState()
        #: The listeners that serve TLS (LISTEN START_SECURE), a subset of ``listeners``.
        self.secure_listeners: set[int] = set()
        #: Wraps every backend connection (TLS, PROXY header for backends flagged so);
        #: None connects plain. See session/connect.py.
        self.wrap_backend: WrapBackend | None = self._wrap_backend
        #: Heartbeat and write-timeout supervision of every forwarding session.
        #: ``clock`` is also the sessions' clock for their idle times (tests pass trio's).
        self.watchdog = Watchdog(clock)
        #: AUTH SERVICE: the auth service each new session asks; None is AUTH ALWAYS_ALLOW.
        self.auth: AuthService | None = None
        self._nursery: trio.Nursery | None = None
        # Set when the last session ends, while a drain waits for that.
        self._emptied: trio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; sessions and listeners live in this nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.health.start(nursery)
            nursery.start_soon(self.watchdog.run)
            task_status.started()
            await trio.sleep_forever()

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

    def current_routing(self) -> RoutingTable:
        return self.routing

    async def listen(self, port: int, host: str = "", start: StartClient | None = None) -> int:
        """Start listening on ``port`` (0 picks a free one); returns the bound port.

        ``start`` finishes opening each accepted client's transport (a TLS handshake),
        inside the client handshake timeout; None serves plain AMQP.
        """
        assert self._nursery is not None, "Server.run() must be started first"
        if port in self.listeners:
            log.info("already listening", port=port)
            return port
        sock = bind_listener(port, await resolve_listen_address(host, port))
        bound = int(sock.getsockname()[1])
        scope = trio.CancelScope()
        self.listeners[bound] = scope

        async def serve() -> None:
            with scope:
                await accept_loop(sock, lambda client: self._start_session(client, bound, start))
            self.listeners.pop(bound, None)
            self.secure_listeners.discard(bound)

        self._nursery.start_soon(serve)
        log.info("listening", port=bound)
        return bound

    async def listen_secure(self, port: int, host: str = "") -> int:
        """Start a TLS listener on ``port``; the bound port.

        Each client's TLS handshake runs inside the client handshake timeout, with the
        INGRESS context of the moment it connected.

        Raises:
            TlsNotConfigured: TLS INGRESS lacks a certificate or key.
            OSError: the port cannot be bound.
        """
        lacking = missing(self.tls.settings("INGRESS"))
        if lacking:
            raise TlsNotConfigured(f"TLS INGRESS needs {' and '.join(lacking)} first")
        bound = await self.listen(port, host, start=self._start_tls_client)
        self.secure_listeners.add(bound)
        return bound

    async def _start_tls_client(self, transport: Transport) -> Transport:
        context = self.tls.context("INGRESS")
        if context is None:  # cannot happen once listening, but never serve plain here
            raise OSError("TLS INGRESS is not configured")
        try:
            return await tls_handshake(transport.sock, context, server_side=True)
        except TlsHandshakeError as exc:
            raise OSError(f"TLS handshake failed: {exc.reason}") from exc

    async def _wrap_backend(self, backend: Backend, transport: Transport) -> Transport:
        """A backend flagged TLS gets the EGRESS context, SNI and name check on its host."""
        if not backend.tls:
            return transport
        context = self.tls.context("EGRESS")
        if context is None:
            lacking = " and ".join(missing(self.tls.settings("EGRESS")))
            raise OSError(f"TLS EGRESS is not usable yet: it needs {lacking}")
        try:
            return await tls_handshake(
                transport.sock, context, server_side=False, server_hostname=backend.host
            )
        except TlsHandshakeError as exc:
            raise OSError(f"TLS handshake failed: {exc.reason}") from exc

    def stop_listening(self, port: int | None = None) -> None:
        """Stop one listener, or all; existing sessions are not touched."""
        for bound, scope in list(self.listeners.items()):
            if port is None or port == bound:
                scope.cancel()
                self.listeners.pop(bound, None)
                self.secure_listeners.discard(bound)

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

    async def drain(self, deadline: float = SHUTDOWN_TIMEOUT) -> tuple[int, int]:
        """Stop listening, disconnect every session gracefully, wait ``deadline`` s.

        Sessions still there at the deadline are cut. Returns (sessions that closed
        within the deadline, sessions cut at it).
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
        drained = len(sessions) - len(left)
        log.info("drained", drained=drained, cut_at_deadline=len(left))
        return drained, len(left)

    def _start_session(
        self, client: socket.socket, listen_port: int, start: StartClient | None
    ) -> None:
        assert self._nursery is not None
        session = Session(
            PlainTransport(client),
            settings=self.settings,
            routing=self.current_routing,
            resolver=self.resolver,
            listen_port=listen_port,
            host_name=self.host_name,
            health=self.health.registry,
            vhost_opened=self.vhosts.opened,
            start=start,
            wrap_backend=self.wrap_backend,
            watchdog=self.watchdog,
            authorize=None if self.auth is None else self.auth.authorize,
        )
        self.sessions[session.id] = session
        self._nursery.start_soon(self._run_session, session)

    async def _run_session(self, session: Session) -> None:
        try:
            await session.run()
        finally:
            del self.sessions[session.id]
            if not self.sessions and self._emptied is not None:
                self._emptied.set()
            for callback in self.session_ended:
                try:
                    callback(session)
                except Exception:  # one broken observer must not end the server
                    log.exception("session-ended callback failed", session=session.id)
