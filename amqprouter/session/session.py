"""One client connection, from accept to close.

Theory of operation
-------------------

Both peers are ``Transport`` objects (net/transport.py), never raw sockets; how a new
kind (TLS, PROXY) plugs in at accept and at connect is in ``connect.py``.

1. **Client handshake** (bounded by ``client_handshake`` timeout): the listener's start
   hook first, if any (a TLS handshake); then the router plays the broker with
   ``ClientHandshake`` until the client's Connection.Open names a vhost.
2. **Broker connect** (``connect.connect_first``): the routing snapshot gives ordered
   candidate backends; each backend's addresses are tried in order, each attempt
   (TCP connect and the backend wrap hook) bounded by ``connect``.
3. **Broker handshake** (bounded by ``broker_handshake``): ``BrokerHandshake`` replays
   the client's StartOk/TuneOk and a fresh Open. The broker's own Open-Ok goes back
   to the client, so the client sees the broker's answer, not ours. A broker Close
   (403 bad password, 530 vhost not allowed) is relayed with its own code and text.
4. **Forwarding**: two pumps (client→broker in this task, broker→client in a child
   task; each given its ``Direction``) move raw bytes, reading only frame headers
   (``FrameScanner``). A transport is written by exactly one task at a time, so whole
   frames never interleave. The server's ``Watchdog`` (watch.py) looks at the session
   now and then (``watch_check``): a peer silent for two heartbeat intervals, or a
   write unfinished for the write timeout, ends forwarding like a disconnect does.
5. **Ending**: the first pump to stop says why (``End``); the other is cancelled and
   the session, now the only user of both transports, finishes the close handshake on
   whichever side is still there, each wait bounded by the ``close`` timeout.

Session control (``pause``, ``unpause``, ``disconnect``; see ``pause.py``) reaches a
running session without touching the pumps' per-frame work: a disconnect records its
``End`` and cancels the forwarding scope (or, before forwarding, the opening scope;
a forced cut cancels everything); a pause is one attribute the ingress pump looks at
once per read. A client whose vhost is paused is held at Connection.Open, before any
broker is chosen, and routed with the table of the moment it is resumed.

Limits (the server's limits.py) meet a session at two points: ``admit``, asked once at
Connection.Open before the pause hold and routing (a refusal is a Close after
``LIMITED_CLOSE_DELAY``), and ``data_budget``, the other attribute the ingress pump
looks at once per read (None unless a data-rate limit applies).

Nothing here blocks without a deadline, and nothing escapes ``run``: one broken
session must never take the server down.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from amqprouter.net import sockets
from amqprouter.net.proxy_transport import ClientRefused
from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.protocol import (
    BadProtocolHeader,
    BrokerHandshake,
    BrokerOpened,
    BrokerState,
    ClientHandshake,
    ClientOpened,
    CloseHandshake,
    Frame,
    FrameScanner,
    NegotiationError,
    PeerClosed,
    ProtocolError,
    close_frame,
    constants,
    peer_closed,
    properties,
)
from amqprouter.routing import Backend, NoRoute, Resolver, Route, RoutingTable
from amqprouter.routing.health import HealthRegistry
from amqprouter.routing.rate_window import DataBudget
from amqprouter.session.auth import Allow, Authorize, AuthQuery, ask
from amqprouter.session.connect import (
    StartClient,
    TakePrimed,
    WrapBackend,
    connect_first,
    converse,
    start_client,
)
from amqprouter.session.events import NO_EVENTS, SessionEvents
from amqprouter.session.pause import Pause, hold_at_open, hold_ingress, keep_broker_alive
from amqprouter.session.settings import SessionSettings
from amqprouter.session.watch import Handle, Watchdog

if TYPE_CHECKING:
    from amqprouter.protocol.tune import TuneParams

log = structlog.get_logger("amqprouter.session")

#: After this many reads served without waiting, a pump yields to the scheduler so
#: that other sessions run and cancellation can reach it.
YIELD_EVERY: Final = 16
#: A client refused at Connection.Open by a LIMIT waits this long for its Close, as in
#: amqpprox: one that reconnects at once is slowed down instead of spinning.
LIMITED_CLOSE_DELAY: Final = 0.75

_ids = itertools.count(1)
#: The decision of a session without an auth service (AUTH ALWAYS_ALLOW).
_ALLOW_ALL: Final = Allow()
#: Named in amqprouter_host; looked up once, not per connection.
HOSTNAME: Final = socket.gethostname()


class PrimedGone(enum.Enum):
    """``_broker_handshake``'s answer when a primed connection was found closed."""

    PRIMED_GONE = "primed connection closed before use"


PRIMED_GONE: Final = PrimedGone.PRIMED_GONE


class State(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class End(enum.Enum):
    """Why forwarding stopped; decides what is still owed to each side."""

    CLEAN = "close handshake completed"
    CLIENT_GONE = "client closed the TCP connection"
    BROKER_GONE = "broker closed the TCP connection"
    CLIENT_ERROR = "client sent a malformed frame"
    BROKER_ERROR = "broker sent a malformed frame"
    TIMEOUT = "close handshake timed out"
    # Ended on purpose by the router (a control command, a drain, the pause limit,
    # shutdown); ``Session.end_reason`` says which. Counted as graceful.
    OPERATOR = "disconnected gracefully by the router"
    OPERATOR_FORCED = "both connections cut by the router"
    OPERATOR_BACKEND = "broker connection cut by the router"
    # Supervision (``Session.watch_check``): a peer silent for two heartbeat intervals
    # is dead, as RabbitMQ judges; one that takes no data for the write timeout has
    # stopped reading. ``Session.end_reason`` says for how long.
    BROKER_SILENT = "broker sent nothing for two heartbeat intervals"
    BROKER_STUCK = "broker stopped reading"
    CLIENT_SILENT = "client sent nothing for two heartbeat intervals"
    CLIENT_STUCK = "client stopped reading"


# What the client is told when forwarding ends for each reason that leaves it alive.
_CLIENT_CLOSE: Final[dict[End, Callable[[str], tuple[int, str]]]] = {
    End.BROKER_GONE: lambda backend: (
        constants.CONNECTION_FORCED,
        f"CONNECTION_FORCED - broker {backend} closed the connection",
    ),
    End.BROKER_ERROR: lambda backend: (
        constants.CONNECTION_FORCED,
        f"CONNECTION_FORCED - broker {backend} sent a malformed frame",
    ),
    End.CLIENT_ERROR: lambda _backend: (constants.FRAME_ERROR, "FRAME_ERROR - malformed frame"),
}


class Direction:
    """One direction of one session's forwarding, as its pump and ``_deliver`` see it:
    what is read and written, the scanner that counts it, and how each end is named."""

    __slots__ = (
        "dst",
        "from_client",
        "malformed",
        "receiver_gone",
        "scanner",
        "sender",
        "sender_gone",
        "src",
    )

    def __init__(
        self, src: Transport, dst: Transport, scanner: FrameScanner, *, from_client: bool
    ) -> None:
        self.src, self.dst, self.scanner = src, dst, scanner
        #: Client→broker: the pause holds it, and it is what ``last_ingress`` times.
        self.from_client = from_client
        self.sender = "client" if from_client else "broker"
        self.sender_gone, self.receiver_gone, self.malformed = (
            (End.CLIENT_GONE, End.BROKER_GONE, End.CLIENT_ERROR)
            if from_client
            else (End.BROKER_GONE, End.CLIENT_GONE, End.BROKER_ERROR)
        )


class Session:
    """The state of one routed connection, readable by the control plane and stats."""

    # Thousands of idle sessions: slots instead of a dict per session.
    __slots__ = (
        "_admit",
        "_authorize",
        "_blocked",
        "_clean_after_forward",
        "_closed_by",
        "_cut",
        "_events",
        "_forwarding",
        "_health",
        "_heartbeat",
        "_host_name",
        "_now",
        "_opening",
        "_pause",
        "_pumps",
        "_requested",
        "_resolver",
        "_routing",
        "_start_client",
        "_take_primed",
        "_vhost_opened",
        "_watch",
        "_watch_handle",
        "_watch_since",
        "_wrap_backend",
        "_writing",
        "alarmed",
        "auth_denied",
        "backend",
        "broker",
        "broker_address",
        "broker_local",
        "client",
        "client_address",
        "client_local",
        "connection_name",
        "data_budget",
        "egress",
        "end_reason",
        "ended",
        "id",
        "ingress",
        "last_egress",
        "last_ingress",
        "limited",
        "listen_port",
        "log",
        "paused",
        "route",
        "settings",
        "started",
        "state",
        "vhost",
    )

    def __init__(
        self,
        client: Transport,
        *,
        settings: SessionSettings,
        routing: Callable[[], RoutingTable],
        resolver: Resolver,
        listen_port: int,
        host_name: Callable[[str], str] = str,
        health: HealthRegistry | None = None,
        vhost_opened: Callable[[str], bool] = lambda vhost: False,
        admit: Callable[[int, str], tuple[int, str] | None] = lambda session_id, vhost: None,
        start: StartClient | None = None,
        wrap_backend: WrapBackend | None = None,
        watchdog: Watchdog | None = None,
        authorize: Authorize | None = None,
        take_primed: TakePrimed | None = None,
        events: SessionEvents = NO_EVENTS,
    ) -> None:
        self.id = next(_ids)
        # Handshake and connect latencies, failed connects (events.py; for /metrics).
        self._events = events
        #: The two transports (connect.py says how new kinds plug in).
        self.client = client
        self.broker: Transport | None = None
        # Run first, inside the client handshake timeout (a TLS handshake, say).
        self._start_client = start
        # Wraps each backend connection, inside the connect timeout.
        self._wrap_backend = wrap_backend
        # Hands out a primed broker connection (primed.py) before connecting afresh.
        self._take_primed = take_primed
        # The auth service (AUTH SERVICE) of the moment the session started; None allows all.
        self._authorize = authorize
        #: The auth service said DENY (CONN's authDenied, STAT's authDenied count).
        self.auth_denied = False
        self.settings = settings
        self._routing = routing
        self._resolver = resolver
        self.listen_port = listen_port
        self._host_name = host_name
        self._health = health
        self.state = State.HANDSHAKE
        self.vhost: str | None = None
        self.backend: Backend | None = None
        #: The routing decision (which mapping and rule, the candidates); it holds the
        #: backend's session count and a sticky client's entry until ``run`` ends.
        self.route: Route | None = None
        self.connection_name: str | None = None
        self.client_address = client.peer_name()
        self.client_local = client.local_name()
        self.broker_address: tuple[str, int] = ("0.0.0.0", 0)
        self.broker_local: tuple[str, int] = ("0.0.0.0", 0)
        # The clock of last_ingress/last_egress: time.monotonic, unless a test's watchdog
        # runs on trio's (virtual) clock. A slot read costs what ``time.monotonic`` does.
        self._now: Callable[[], float] = time.monotonic if watchdog is None else watchdog.clock
        # When each direction last carried data (``_now``), for CONN's idle times and
        # the watchdog.
        self.last_ingress = self.last_egress = self._now()
        self.started = time.time()
        self.ended: End | None = None
        #: Set by SESSION/VHOST PAUSE: client data is held, not forwarded (session control).
        self.paused = False
        #: Why the router ended the session on purpose (with an ``End.OPERATOR*``).
        self.end_reason: str | None = None
        # Told each vhost at Connection.Open; True means "paused: hold the client there".
        self._vhost_opened = vhost_opened
        # Asked once at Connection.Open, before the pause hold and routing: None admits,
        # (reply code, text) refuses (LIMIT; the server's limits.py).
        self._admit = admit
        #: Set when a LIMIT refused the client at Connection.Open; ``alarmed`` when an
        #: alarm-only limit would have (set by the server, counted by statistics).
        self.limited = False
        self.alarmed = False
        #: The client→broker byte budget (LIMIT DATA_RATE[_ALARM]); None costs the pump
        #: nothing. Replaced by the server when the limits change.
        self.data_budget: DataBudget | None = None
        # The current pause, until every user of it is done (pause.py). The ingress
        # pump looks at it once per read.
        self._pause: Pause | None = None
        # A graceful or backend disconnect asked for, delivered by cancelling a scope:
        # ``_opening`` before forwarding, ``_forwarding`` during; ``_cut`` for a forced one.
        self._requested: End | None = None
        self._cut = trio.CancelScope()
        self._opening: trio.CancelScope | None = None
        self._pumps: trio.Nursery | None = None
        self._heartbeat = 0
        # Supervision while forwarding (``watch_check``): the server's watchdog, this
        # session's place in it, when client→broker supervision last (re)started (a
        # resume, an Unblocked), and whether the broker has blocked the connection.
        self._watch = watchdog
        self._watch_handle: Handle | None = None
        self._watch_since = 0.0
        self._blocked = False
        # Counters: ingress = client→broker, egress = broker→client (bytes, frames, reads).
        self.ingress = FrameScanner(constants.FRAME_MIN_SIZE)
        self.egress = FrameScanner(constants.FRAME_MIN_SIZE)
        self._forwarding: trio.CancelScope | None = None
        # Transports with a write in progress. A pump cancelled mid-write leaves its peer's
        # stream inside a frame, where a Close would be garbage: such a peer is just cut.
        self._writing: set[Transport] = set()
        self._clean_after_forward = False
        # Who sent the Connection.Close that ended forwarding, its code and text.
        self._closed_by: tuple[str, int, str] | None = None
        self.log = log.bind(session=self.id, client=endpoint(self.client_address))

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection to its end; never raises except on cancellation."""
        try:
            with self._cut:
                await self._serve()
        except Exception:
            self.log.exception("session failed")
        finally:
            self.state = State.CLOSED
            if self.route is not None:
                self.route.release()
            self.client.close()
            if self.broker is not None:
                self.broker.close()

    async def _serve(self) -> None:
        opened: ClientOpened | None = None
        open_ok: BrokerOpened | None = None
        with trio.CancelScope() as self._opening:
            opened = await self._client_handshake()
            if opened is not None:
                opened = await self._admit_at_open(opened)
            if opened is not None:
                opened = await self._hold_at_open(opened)
            if opened is not None:
                open_ok = await self._open_broker(opened)
        self._opening = None
        if self._requested is not None:
            await self._disconnect_before_forwarding()
            return
        if opened is None or open_ok is None:
            return
        tune, client_early = opened.tune, opened.pending
        broker_early = open_ok.open_ok + open_ok.pending
        # The handshake's records (the client's StartOk and its properties) are not
        # needed while forwarding: idle sessions should not hold them.
        del opened, open_ok
        await self._forward(tune, client_early, broker_early)

    # -- 1. client handshake ---------------------------------------------------------

    async def _client_handshake(self) -> ClientOpened | None:
        machine = ClientHandshake(self.settings.tune)
        timeout = self.settings.timeouts.client_handshake
        began = time.monotonic()
        with trio.move_on_after(timeout):
            if self._start_client is not None and not await self._start():
                return None
            try:
                event: ClientOpened | PeerClosed = await converse(self.client, machine)
                if isinstance(event, ClientOpened):
                    self._events.client_opened(self, time.monotonic() - began)
                    self.vhost = event.vhost
                    self.connection_name = event.start_ok.connection_name
                    self.log = self.log.bind(
                        vhost=event.vhost, connection_name=self.connection_name
                    )
                    return event
                self.log.info("client closed during handshake", reply_code=event.reply_code)
                return None
            except BadProtocolHeader as exc:
                self.log.warning("bad protocol header", received=exc.received)
                await self._send_quietly(self.client, constants.PROTOCOL_HEADER)
                return None
            except ProtocolError as exc:
                self.log.warning("client handshake error", error=str(exc))
                # What the machine queued before the error (Connection.Start) goes first.
                await self._send_quietly(self.client, machine.data_to_send())
                await self._close_client(exc.reply_code, exc.reply_text)
                return None
            except PeerGone:
                self.log.info("client left during handshake")
                return None
        self.log.warning("client handshake timed out", timeout=timeout)
        return None

    async def _start(self) -> bool:
        """Run the listener's start hook (TLS handshake, PROXY header); False if it failed."""
        try:
            self.client = await start_client(self.client, self._start_client)
        except ClientRefused:  # the listener logged it, at most once a second per address
            return False
        except (OSError, PeerGone, ProtocolError) as exc:
            self.log.info("client transport failed to start", error=str(exc))
            return False
        # A PROXY header names the real client: the transport now says who it is.
        self.client_address = self.client.peer_name()
        self.log = log.bind(session=self.id, client=endpoint(self.client_address))
        version = self.client.tls_version()
        if version is not None:  # every line of a TLS session says so, and who it is
            self.log = self.log.bind(tls=version, client_cert=self.client.peer_subject())
        return True

    # -- 2 and 3. broker connect and handshake ---------------------------------------

    async def _open_broker(self, opened: ClientOpened) -> BrokerOpened | None:
        self.state = State.CONNECTING
        health = self._health
        try:
            # Backends marked down are tried last (routing.health).
            down = health.down() if health is not None else ()
            # The client's address (a PROXY header's source) picks rules and sticky entries.
            route = self._routing().route(opened.vhost, self.client_address[0], down)
        except NoRoute as exc:
            self.log.error(
                "no mapping for vhost",
                ingressRemote=endpoint(self.client_address),
                detail=exc.detail,
            )
            await self._close_client(exc.reply_code, str(exc))
            return None
        self.route, candidates = route, route.candidates
        allowed = await self._authenticate(opened)
        if allowed is None:
            return None
        began = time.monotonic()
        take_primed = self._take_primed
        while True:
            connected = await connect_first(
                candidates,
                self._resolver,
                self.settings.timeouts.connect,
                self._wrap_backend,
                self.client_address,  # a PROXY header's source, once the client started
                health,
                self.log,
                take_primed=take_primed,
                failed=self._events.connect_failed,
            )
            if not isinstance(connected, tuple):
                break
            backend, broker, greeted = connected
            self.broker, self.backend = broker, backend
            route.landed(backend)
            self.broker_address = broker.peer_name()
            self.broker_local = broker.local_name()
            self.log = self.log.bind(backend=backend.name)
            open_ok = await self._broker_handshake(opened, backend, allowed, greeted)
            if open_ok is PRIMED_GONE:
                # The broker closed the primed connection between the pool's check and
                # the replay, before answering it: the client has been told nothing, so
                # it gets a fresh connection instead of a 320 (once: never primed again).
                self.log.info("primed broker connection closed before use; connecting again")
                broker.close()
                take_primed = None
                continue
            if open_ok is not None:
                self._events.broker_opened(self, time.monotonic() - began)
            return open_ok
        names = ", ".join(backend.label for backend in candidates)
        self.log.error("no backend reachable", tried=connected)
        await self._close_client(
            constants.CONNECTION_FORCED,
            # Why each attempt failed (refused, timed out, a TLS verify error), so the
            # client's own log says what to fix; the Close cuts the text at 255 bytes.
            f"CONNECTION_FORCED - no broker reachable for vhost {opened.vhost} (tried {names})"
            f": {'; '.join(connected)}",
        )
        return None

    async def _authenticate(self, opened: ClientOpened) -> Allow | None:
        """The auth service's ALLOW (``_ALLOW_ALL`` without one); None once a DENY has
        been told to the client: Close 403 if it advertised authentication_failure_close,
        else (as RabbitMQ does to such clients) just the socket closed, by ``run``."""
        if self._authorize is None:
            return _ALLOW_ALL
        mechanism, credentials = properties.start_ok_sasl(opened.start_ok.raw)
        query = AuthQuery(
            vhost=opened.vhost,
            mechanism=mechanism,
            credentials=credentials,
            client_host=self._host_name(self.client_address[0]),
            connection_name=self.connection_name or "",
        )
        decision = await ask(self._authorize, query, self.settings.timeouts.auth)
        if isinstance(decision, Allow):
            self.log.debug("auth service allowed", reason=decision.reason)
            return decision
        self.auth_denied = True
        self.log.error(
            f"Disconnecting unauthenticated/unauthorized client, reason: {decision.reason}"
        )
        client_properties = opened.start_ok.client_properties
        if properties.has_capability(client_properties, "authentication_failure_close"):
            # Class and method of StartOk, as amqpprox (and RabbitMQ) say; the text is cut
            # to the 255 octets of a short string.
            await self._close_client(constants.ACCESS_REFUSED, decision.reason, 10, 11)
        return None

    async def _broker_handshake(
        self, opened: ClientOpened, backend: Backend, allowed: Allow, greeted: bool
    ) -> BrokerOpened | PrimedGone | None:
        """The broker's Open-Ok; None once the client has been told why not; PRIMED_GONE
        (nothing told) when a primed connection turned out closed before any answer."""
        assert self.broker is not None
        broker = self.broker
        local_host, local_port = self.broker_local
        extra = {
            "amqprouter_client": f"{self._host_name(self.client_address[0])}:"
            f"{self.client_address[1]}",
            "amqprouter_host": f"(:{self.listen_port}) {HOSTNAME}:{local_port}",
        }
        if allowed.reason:
            extra["amqprouter_auth"] = allowed.reason
        try:
            machine = BrokerHandshake(
                vhost=opened.vhost,
                start_ok=opened.start_ok,
                client_tune=opened.tune,
                extra_client_properties=extra,
                backend=backend.name,
                sasl=allowed.sasl,
                greeted=greeted,
            )
        except ProtocolError as exc:  # the auth service's credentials do not fit
            self.log.error("broker handshake error", error=str(exc))
            await self._close_client(
                constants.CONNECTION_FORCED, f"CONNECTION_FORCED - {exc.reply_text}"
            )
            return None
        self.log.debug(
            "starting broker connection",
            broker=endpoint(self.broker_address),
            local=f"{local_host}:{local_port}",
            primed=greeted,
        )
        if not machine.properties_added:
            # The broker would reset a StartOk over 4096 bytes: this one goes unchanged.
            self.log.info("client properties too large to add amqprouter_client to")
        timeout = self.settings.timeouts.broker_handshake
        with trio.move_on_after(timeout):
            try:
                event: BrokerOpened | PeerClosed = await converse(broker, machine)
                if isinstance(event, BrokerOpened):
                    return event
                # 403 wrong password, 530 vhost missing: the client gets the broker's own
                # words. The Close-Ok to the broker was already sent.
                self.log.warning(
                    "broker refused connection",
                    reply_code=event.reply_code,
                    reply_text=event.reply_text,
                )
                await self._close_client(
                    event.reply_code, event.reply_text, event.class_id, event.method_id
                )
                return None
            except NegotiationError as exc:
                self.log.error("tune mismatch with broker", error=str(exc))
                await self._close_client(exc.reply_code, exc.reply_text)
                return None
            except ProtocolError as exc:
                self.log.error("broker handshake error", error=str(exc))
                await self._close_client(
                    constants.CONNECTION_FORCED, f"CONNECTION_FORCED - {exc.reply_text}"
                )
                return None
            except PeerGone as exc:
                if greeted and machine.state is BrokerState.AWAITING_TUNE:
                    return PRIMED_GONE
                self.log.warning("broker closed during handshake", error=str(exc))
                await self._close_client(
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - broker {backend.label} closed the connection "
                    "during the handshake",
                )
                return None
        self.log.warning("broker handshake timed out", timeout=timeout)
        await self._close_client(
            constants.CONNECTION_FORCED,
            f"CONNECTION_FORCED - broker {backend.label} did not complete the handshake "
            f"within {timeout:g}s",
        )
        return None

    # -- 4. forwarding ---------------------------------------------------------------

    async def _forward(self, tune: TuneParams, client_early: bytes, broker_early: bytes) -> None:
        """Forward until either side ends; ``*_early`` were sent before the handshake ended."""
        assert self.broker is not None and self.backend is not None
        self.ingress.frame_max = tune.frame_max
        self.egress.frame_max = tune.frame_max
        self._heartbeat = tune.heartbeat
        self.state = State.OPEN
        # One INFO line when a session opens and one when it ends (with the Close that
        # ended it): INFO logging is on by default in the files, and each line costs.
        self.log.info(
            "session open",
            broker=endpoint(self.broker_address),
            local=endpoint(self.broker_local),
        )
        outcome: list[End] = []  # what ended forwarding: empty if a close deadline did

        async def pump(way: Direction) -> None:
            outcome.append(await self._pump(way))
            scope.cancel()  # one direction ended: so does the other

        try:
            # One scope for all of forwarding: the pumps' nursery's. Disconnects cancel it
            # and a Close sets its deadline (``_forwarding``); a scope (and its cancel
            # status) less per session than a scope around the nursery.
            async with trio.open_nursery() as nursery:
                scope = self._forwarding = nursery.cancel_scope
                # The handshake just carried data both ways (it may have been held at
                # Open for long): supervision and CONN's idle times start from here.
                now = self.last_ingress = self.last_egress = self._now()
                if self._watch is not None:
                    self._watch_handle = self._watch.watch(self, now + self._watch_step())
                early = await self._deliver_early(client_early, broker_early)
                if early is not None:
                    outcome.append(early)
                else:
                    # Only now: a keeper task (pause) writes to the broker too, so it must
                    # not start while the early frames are being written.
                    self._pumps = nursery
                    self._start_keeper()  # paused before forwarding began
                    nursery.start_soon(pump, self._downstream())
                    await pump(self._upstream())
        finally:
            self._forwarding = self._pumps = None
            if self._watch is not None and self._watch_handle is not None:
                self._watch.forget(self._watch_handle)
                self._watch_handle = None
        end = outcome[0] if outcome else End.TIMEOUT
        if self._requested is not None and scope.cancelled_caught:
            end = self._requested
        self.ended = end
        self.state = State.CLOSING
        await self._finish(end)

    async def _deliver_early(self, client_early: bytes, broker_early: bytes) -> End | None:
        """Frames pipelined during the handshake go first, in order; an End if that fails."""
        for way, data in ((self._upstream(), client_early), (self._downstream(), broker_early)):
            if not data:
                continue
            try:
                await self._deliver(way, data)
            except ProtocolError:
                return way.malformed
            except PeerGone:
                return way.receiver_gone
        return None

    def _upstream(self) -> Direction:
        assert self.broker is not None
        return Direction(self.client, self.broker, self.ingress, from_client=True)

    def _downstream(self) -> Direction:
        assert self.broker is not None
        return Direction(self.broker, self.client, self.egress, from_client=False)

    async def _pump(self, way: Direction) -> End:
        """Move ``way``'s bytes until one side ends; returns why."""
        src, from_client = way.src, way.from_client
        dst, writing = way.dst, self._writing
        # As for reads: a plain socket is written straight from here, a coroutine less
        # per forwarded read (a bound method or partial kept for it would be memory per
        # idle session).
        dst_sock = dst.sock if type(dst) is PlainTransport else None
        budget = YIELD_EVERY
        recv = src.recv
        wait_readable: Callable[[], Awaitable[None]]
        pending: Callable[[], int] | None
        if type(src) is PlainTransport:
            # A plain socket holds no decoded bytes of its own, so ``pending()`` is never
            # asked; and the pump parks on the socket directly, as it did before the
            # seam: an idle session has both pumps parked, and a coroutine layer more
            # per park would be memory per idle session.
            # (trio takes any object with fileno(), asked at each wait; its stub says int.)
            wait_readable = partial(trio.lowlevel.wait_readable, src.sock)  # type: ignore[arg-type]
            pending = None
        else:
            # TLS may have whole records decrypted with nothing left on the socket.
            wait_readable, pending = src.wait_readable, src.pending
        size = sockets.READ_SIZE
        if from_client and self.data_budget is not None:  # reads no larger than the budget
            size = self.data_budget.allowance(trio.current_time(), size)
        drained = False
        while True:
            if drained and (pending is None or not pending()):
                # The last read came back short, so the kernel buffer was empty: wait
                # instead of paying for a recv() that would only say EAGAIN.
                await wait_readable()
                budget = YIELD_EVERY
            try:
                data = recv(size)
            except BlockingIOError:
                drained = True
                continue
            except OSError:
                return way.sender_gone
            if not data:
                return End.CLEAN if self._clean_after_forward else way.sender_gone
            drained = len(data) < size
            if from_client and self._pause is not None:
                held = await self._hold(data)
                if isinstance(held, End):
                    return held
                data, drained = held, False
            try:
                # ``_deliver``, inlined: a coroutine less per forwarded read.
                pieces = self._scanned(way, data)
                if pieces:
                    writing.add(dst)
                    if dst_sock is None:
                        await dst.send_pieces(pieces)
                    else:
                        await sockets.send_pieces(dst_sock, pieces)
                    writing.discard(dst)
            except ProtocolError as exc:
                self.log.warning("malformed frame", sender=way.sender, error=str(exc))
                return way.malformed
            except PeerGone:
                return way.receiver_gone
            if self._clean_after_forward:
                return End.CLEAN
            if from_client and (data_budget := self.data_budget) is not None:
                # No await unless the budget is spent: a coroutine per read costs the
                # forwarding path more than the accounting does.
                wait, size = self._spend(data_budget, len(data))
                if wait:
                    await trio.sleep(wait)
                    size = data_budget.allowance(trio.current_time(), sockets.READ_SIZE)
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                await trio.lowlevel.checkpoint()

    def _spend(self, data_budget: DataBudget, size: int) -> tuple[float, int]:
        """Count a forwarded read against the data-rate budget: (seconds to stop reading
        the client, 0 while the budget lasts; the size of the next read). Stopping is
        the back-pressure: nothing is dropped."""
        if data_budget.inert:  # the limits were lifted while forwarding
            self.data_budget = None
            return 0.0, sockets.READ_SIZE
        now = trio.current_time()
        wait, alarm = data_budget.spend(size, now)
        if alarm:
            self.log.info(f"Data Rate Alarm: Hit {data_budget.alarm} bytes/s")
        return wait, data_budget.allowance(now, sockets.READ_SIZE)

    async def _deliver(self, way: Direction, data: bytes) -> None:
        """Scan ``data`` and forward the whole frames in it."""
        pieces = self._scanned(way, data)
        if pieces:
            dst = way.dst
            self._writing.add(dst)
            await dst.send_pieces(pieces)
            self._writing.discard(dst)

    def _scanned(self, way: Direction, data: bytes) -> list[bytes | memoryview]:
        """Stamp the direction's last data, scan ``data`` and act on its channel-0
        methods: the pieces of ``data`` ready to forward (whole frames)."""
        if way.from_client:
            self.last_ingress = self._now()
        else:
            self.last_egress = self._now()
        pieces, controls = way.scanner.scan(data)
        if controls is not None:
            self._on_channel_zero(controls, way.sender)
        return pieces

    def _on_channel_zero(self, frames: list[Frame], side: str) -> None:
        """The only methods decoded while forwarding: Close, Close-Ok, Blocked, Unblocked.

        ``side`` sent them: "client" or "broker".
        """
        for frame in frames:
            method_id = frame.method_id
            if method_id == constants.CONNECTION_CLOSE:
                close = peer_closed(frame)
                self.log.debug(
                    f"{side} sent Connection.Close",
                    reply_code=close.reply_code,
                    reply_text=close.reply_text,
                )
                if self._closed_by is None:
                    self._closed_by = (side, close.reply_code, close.reply_text)
                self.state = State.CLOSING
                # The other side owes a Close-Ok; it gets the close timeout to send it.
                if self._forwarding is not None:
                    deadline = trio.current_time() + self.settings.timeouts.close
                    self._forwarding.deadline = min(self._forwarding.deadline, deadline)
            elif method_id == constants.CONNECTION_CLOSE_OK:
                self._clean_after_forward = True
            elif method_id == constants.CONNECTION_BLOCKED:
                self.log.info("broker blocked the connection")
                self._blocked = True
            elif method_id == constants.CONNECTION_UNBLOCKED:
                self.log.info("broker unblocked the connection")
                self._blocked = False
                self._watch_since = self._now()  # a write held by the block restarts

    # -- supervision: heartbeats and write timeouts --------------------------------------

    def _watch_step(self) -> float:
        """The shortest time in which this session can become overdue."""
        heartbeat = self._heartbeat
        silence = 2.0 * heartbeat if heartbeat > 0 else math.inf
        return min(silence, self.settings.timeouts.write_for(heartbeat))

    def watch_check(self, now: float) -> float | None:
        """The watchdog's look at a forwarding session (``now``: the watchdog's clock).

        Ends the session if a peer is overdue: silent for two heartbeat intervals (only
        judged while its pump is reading it), or not taking a write for the write
        timeout. Returns when to look again (None: stop). Paused sessions are not
        judged on the client side (the hold reads their client on purpose, or not at
        all), nor is a write to a broker that said Connection.Blocked.
        """
        if self._forwarding is None or self.state is not State.OPEN:
            return None
        if self._requested is not None:
            return None
        assert self.broker is not None
        heartbeat = self._heartbeat
        silence = 2.0 * heartbeat if heartbeat > 0 else math.inf
        write = self.settings.timeouts.write_for(heartbeat)
        # A write that starts later is read later: it cannot be overdue before this.
        later_write = now + write
        # Client → broker: the ingress pump reads the client and writes the broker.
        since = max(self.last_ingress, self._watch_since)
        if self._pause is not None or (self._blocked and self.broker in self._writing):
            next_ingress = now + min(silence, write)
        elif self.broker in self._writing:
            if now - since >= write:
                self._overdue(End.BROKER_STUCK, now - since, write)
                return None
            next_ingress = since + write
        else:
            if now - since >= silence:
                self._overdue(End.CLIENT_SILENT, now - since, write)
                return None
            next_ingress = min(since + silence, later_write)
        # Broker → client: the egress pump reads the broker and writes the client.
        since = self.last_egress
        if self.client in self._writing:
            if now - since >= write:
                self._overdue(End.CLIENT_STUCK, now - since, write)
                return None
            next_egress = since + write
        else:
            if now - since >= silence:
                self._overdue(End.BROKER_SILENT, now - since, write)
                return None
            next_egress = min(since + silence, later_write)
        return min(next_ingress, next_egress)

    def _overdue(self, end: End, seconds: float, write: float) -> None:
        """End forwarding for a supervision ``end``; ``_finish`` tells the peers."""
        assert self.backend is not None and self._forwarding is not None
        who = (
            f"broker {self.backend.label}"
            if end in (End.BROKER_SILENT, End.BROKER_STUCK)
            else f"client {endpoint(self.client_address)}"
        )
        if end in (End.BROKER_SILENT, End.CLIENT_SILENT):
            what = f"sent nothing for {seconds:.0f}s (heartbeat {self._heartbeat}s)"
        else:
            what = f"did not read for {seconds:.0f}s (write timeout {write:g}s)"
        self._requested, self.end_reason = end, f"{who} {what}"
        self.log.warning("peer overdue", reason=end.value, detail=self.end_reason)
        self._forwarding.cancel()

    # -- 5. ending -------------------------------------------------------------------

    async def _finish(self, end: End) -> None:
        assert self.backend is not None
        backend = self.backend.label
        if end is End.CLEAN:
            side, code, text = self._closed_by or ("", 0, "")
            self.log.info(
                "session closed cleanly", closed_by=side, reply_code=code, reply_text=text
            )
            return
        self.log.info("session ending", reason=end.value, detail=self.end_reason)
        if end is End.OPERATOR:
            # The client first (it may still be sending), then the broker, each bounded.
            await self._close_client(
                constants.CONNECTION_FORCED,
                f"CONNECTION_FORCED - {self.end_reason}",
                answer_within=self.settings.timeouts.disconnect,
            )
            await self._close_broker(constants.REPLY_SUCCESS, f"amqprouter: {self.end_reason}")
            return
        if end in (End.BROKER_SILENT, End.BROKER_STUCK):
            assert self.broker is not None
            self.broker.close()  # frozen or not reading: a Close would wait in vain
            await self._close_client(
                constants.CONNECTION_FORCED, f"CONNECTION_FORCED - {self.end_reason}"
            )
            return
        if end in (End.CLIENT_SILENT, End.CLIENT_STUCK):
            # The client gets a Close too (cut instead if a write to it is under way):
            # a frozen client that wakes up reads why its connection ended.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._close_client,
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - {self.end_reason}",
                )
                nursery.start_soon(
                    self._close_broker, constants.REPLY_SUCCESS, f"amqprouter: {self.end_reason}"
                )
            return
        if end is End.OPERATOR_BACKEND:
            assert self.broker is not None
            self.broker.close()  # cut, as amqpprox's BACKEND_DISCONNECT does
            await self._close_client(
                constants.CONNECTION_FORCED,
                f"CONNECTION_FORCED - broker {backend} disconnected by the router "
                f"({self.end_reason})",
            )
            return
        async with trio.open_nursery() as nursery:
            if end in _CLIENT_CLOSE:
                nursery.start_soon(self._close_client, *_CLIENT_CLOSE[end](backend))
            if end in (End.CLIENT_GONE, End.CLIENT_ERROR):
                nursery.start_soon(
                    self._close_broker,
                    constants.REPLY_SUCCESS,
                    f"amqprouter: {end.value} ({self.client_address[0]}:{self.client_address[1]})",
                )

    async def _close_client(
        self,
        code: int,
        text: str,
        class_id: int = 0,
        method_id: int = 0,
        *,
        answer_within: float | None = None,
    ) -> None:
        frame = close_frame(code, text, class_id, method_id)
        unread = self.ingress.take_pending()
        if self._pause is not None:  # what the client sent while paused follows it
            unread += self._pause.take_held()
        await self._close_peer(self.client, frame, unread, answer_within)

    async def _close_broker(self, code: int, text: str) -> None:
        if self.broker is not None:
            await self._close_peer(self.broker, close_frame(code, text), self.egress.take_pending())

    async def _close_peer(
        self,
        peer: Transport,
        frame: bytes,
        unread: bytes,
        answer_within: float | None = None,
    ) -> None:
        """Send Close, wait (bounded) for Close-Ok, then close the transport.

        ``unread`` is the partial frame the peer was sending when forwarding stopped,
        so that its Close-Ok is read from a frame boundary.
        """
        if peer in self._writing:
            peer.close()
            return
        machine = CloseHandshake(self.settings.tune.frame_max)
        machine.receive_data(unread)
        wait = self.settings.timeouts.close if answer_within is None else answer_within
        with trio.move_on_after(wait):
            try:
                await peer.send_all(frame)
                await converse(peer, machine)
            except (PeerGone, ProtocolError):
                pass
        peer.close()

    async def _send_quietly(self, peer: Transport, data: bytes) -> None:
        with trio.move_on_after(self.settings.timeouts.close), contextlib.suppress(PeerGone):
            await peer.send_all(data)

    # -- session control: pause, unpause, disconnect (control plane, drains) --------

    @property
    def close_started_by(self) -> str | None:
        """ "client" or "broker": who sent the Connection.Close that ended forwarding."""
        return None if self._closed_by is None else self._closed_by[0]

    def pause(self) -> bool:
        """Hold client→broker data from now on; False if already paused or ending.

        Before Connection.Open this holds the client at Open (no broker is chosen);
        while forwarding, the ingress pump holds what the client sends and a keeper
        task heartbeats the broker (pause.py).
        """
        if self.paused or self.state in (State.CLOSING, State.CLOSED):
            return False
        self.paused = True
        if self._pause is None:
            self._pause = Pause()
        else:
            self._pause.rearm()
        self._start_keeper()
        self.log.info("session paused")
        return True

    def unpause(self) -> bool:
        """Resume a paused session (held bytes go first); False if it was not paused.

        A client held at Connection.Open connects now, routed by the table of now.
        """
        if not self.paused or self._pause is None:
            return False
        self.paused = False
        pause = self._pause
        self._watch_since = self._now()  # the client is judged again from now
        self.log.info("session unpaused", held_bytes=pause.held_bytes)
        pause.resume()
        self._release(pause)
        return True

    def disconnect(self, end: End, reason: str) -> bool:
        """End the session on purpose; False if it is already ending that way or closed.

        ``end`` is ``End.OPERATOR`` (graceful: Close 320 with ``reason`` to the client,
        its Close-Ok, then Close 200 to the broker, each bounded), ``End.OPERATOR_FORCED``
        (both sockets cut now, at any stage) or ``End.OPERATOR_BACKEND`` (the broker
        socket cut, the client told with a 320; only while forwarding).
        """
        if self.state is State.CLOSED or self.ended is End.OPERATOR_FORCED:
            return False
        if end is End.OPERATOR_FORCED:
            self.ended, self.end_reason = end, reason
            self.log.info("session cut", detail=reason)
            self._cut.cancel()
            return True
        if self._requested is not None or self.state is State.CLOSING:
            return False
        if end is End.OPERATOR_BACKEND and self._forwarding is None:
            return False
        self._requested, self.end_reason = end, reason
        self.log.info("session disconnect requested", reason=end.value, detail=reason)
        scope = self._forwarding or self._opening
        if scope is not None:
            scope.cancel()
        return True

    async def _disconnect_before_forwarding(self) -> None:
        """A graceful disconnect that arrived before forwarding: tell the client, then close."""
        self.ended = self._requested
        self.state = State.CLOSING
        if self.broker is not None:
            self.broker.close()  # its handshake never finished
        await self._close_client(
            constants.CONNECTION_FORCED,
            f"CONNECTION_FORCED - {self.end_reason}",
            answer_within=self.settings.timeouts.disconnect,
        )

    def _release(self, pause: Pause) -> None:
        """Forget ``pause`` once it is resumed and nothing uses it any more."""
        if pause.finished and self._pause is pause:
            self._pause = None

    async def _admit_at_open(self, opened: ClientOpened) -> ClientOpened | None:
        """Ask the server's limits whether this client may open its vhost; a refused
        client waits ``LIMITED_CLOSE_DELAY`` (within the opening scope: a disconnect or
        shutdown ends the wait) and gets the refusal's Close."""
        refusal = self._admit(self.id, opened.vhost)
        if refusal is None:
            return opened
        self.limited = True
        self.log.info("client limited at Connection.Open", reply_text=refusal[1])
        await trio.sleep(LIMITED_CLOSE_DELAY)
        await self._close_client(*refusal)
        return None

    async def _hold_at_open(self, opened: ClientOpened) -> ClientOpened | None:
        """Hold a paused client at Connection.Open until resumed (pause.py); None if it ended."""
        if self._vhost_opened(opened.vhost):
            self.pause()
        pause = self._pause
        if pause is None:
            return opened
        self.log.info("holding client at Connection.Open while paused")
        max_pause = self.settings.timeouts.max_pause
        try:
            resumed = await hold_at_open(
                self.client,
                pause,
                heartbeat=opened.tune.heartbeat,
                max_pause=max_pause,
                writing=self._writing,
            )
        except PeerGone:
            self.log.info("client left while held at Connection.Open")
            return None
        finally:
            self._release(pause)
        if not resumed:
            self.disconnect(
                End.OPERATOR, f"vhost {opened.vhost} paused for longer than {max_pause:g}s"
            )
            return None
        self.log.info("resuming client held at Connection.Open")
        return attrs.evolve(opened, pending=opened.pending + pause.take_held())

    async def _hold(self, data: bytes) -> End | bytes:
        """The ingress pump while paused: everything held once resumed, or CLIENT_GONE."""
        pause = self._pause
        assert pause is not None
        try:
            return await hold_ingress(self.client, pause, data)
        except PeerGone:
            return End.CLIENT_GONE
        finally:
            self._release(pause)

    def _start_keeper(self) -> None:
        pause = self._pause
        if self._pumps is not None and pause is not None and not pause.keeper_running:
            pause.keeper_running = True
            self._pumps.start_soon(self._keep_broker_alive, pause)

    async def _keep_broker_alive(self, pause: Pause) -> None:
        """The keeper task (pause.py): heartbeats, and the end of a pause gone wrong."""
        assert self.broker is not None
        timeouts = self.settings.timeouts
        try:
            reason = await keep_broker_alive(
                self.broker,
                pause,
                heartbeat=self._heartbeat,
                max_pause=timeouts.max_pause,
                # The watchdog leaves a paused session's client→broker side alone.
                write_timeout=min(timeouts.max_pause, timeouts.write_for(self._heartbeat)),
                writing=self._writing,
            )
            if reason is not None:
                self.disconnect(End.OPERATOR, reason)
        except PeerGone:
            pass  # the broker pump sees it go and ends the session
        finally:
            pause.keeper_running = False
            self._release(pause)
