"""Opening a session: from the client's first byte to the broker's Open-Ok.

In order, each step bounded and each failure told to the client where it is owed:

1. **Client handshake** (within the ``client_handshake`` timeout): the listener's
   start hook first, if any (a TLS handshake, a PROXY header); then the router plays
   the broker with ``ClientHandshake`` until the client's Connection.Open names a
   vhost.
2. **Admission**: the limits' verdict (``SessionContext.admit``), asked once; a
   refused client waits ``LIMITED_CLOSE_DELAY`` and gets the refusal's Close.
3. **Hold at Open**: a client whose vhost (or itself) is paused waits here, before
   any broker is chosen, and is routed with the table of the moment it is resumed.
4. **Routing and auth**: the routing snapshot gives ordered candidate backends; the
   auth service (if any) allows or denies the client.
5. **Broker connect** (``connect.connect_first``): each backend's addresses are tried
   in order, a primed connection taken where the pool has one, each attempt bounded
   by ``connect``.
6. **Broker replay** (within ``broker_handshake``): ``BrokerHandshake`` replays the
   client's StartOk/TuneOk and a fresh Open. The broker's own Open-Ok goes to the
   client, so the client sees the broker's answer, not ours; a broker Close (403 bad
   password, 530 vhost not allowed) is relayed with its own code and text.

The whole of it runs in the opening scope, which a disconnect cancels. What
forwarding starts from comes back as one ``Opened`` record.
"""

from __future__ import annotations

import enum
import math
import socket
import time
from typing import TYPE_CHECKING, Final, cast

import attrs
import trio

from amqprouter.net.proxy_transport import ClientRefused
from amqprouter.net.sockets import PeerGone, endpoint, shared
from amqprouter.net.transport import converse
from amqprouter.protocol import (
    BadProtocolHeader,
    BrokerHandshake,
    BrokerOpened,
    BrokerState,
    ClientHandshake,
    ClientOpened,
    NegotiationError,
    PeerClosed,
    ProtocolError,
    constants,
    properties,
)
from amqprouter.protocol.client_identity import identify
from amqprouter.protocol.tune import TuneParams
from amqprouter.routing import Backend, NoRoute
from amqprouter.session.auth import Allow, AuthQuery, ask
from amqprouter.session.closing import End
from amqprouter.session.connect import connect_first, start_client
from amqprouter.session.context import Admitted
from amqprouter.session.pause import hold_at_open
from amqprouter.session.state import SessionState, State, log

if TYPE_CHECKING:
    from collections.abc import Sequence

    from amqprouter.net.transport import Transport
    from amqprouter.routing import Route
    from amqprouter.session.pause import Pause
    from amqprouter.session.pool import Pool
    from amqprouter.session.session import Session  # what every Opening is

#: A client refused at Connection.Open by a LIMIT waits this long for its Close, as in
#: amqpprox: one that reconnects at once is slowed down instead of spinning.
LIMITED_CLOSE_DELAY: Final = 0.75
#: The decision of a session without an auth service (AUTH ALWAYS_ALLOW).
_ALLOW_ALL: Final = Allow()
#: Named in amqprouter_host; looked up once, not per connection.
HOSTNAME: Final = socket.gethostname()


@attrs.frozen
class Opened:
    """What forwarding starts from: the tune both sides agreed, and the frames each side
    sent before the handshake ended (the broker's: its Open-Ok first). The handshake's
    records (the client's StartOk and its properties) are left behind: idle sessions
    should not hold them."""

    tune: TuneParams
    client_early: bytes
    broker_early: bytes


class PrimedGone(enum.Enum):
    """``_broker_handshake``'s answer when a primed connection was found closed."""

    PRIMED_GONE = "primed connection closed before use"


PRIMED_GONE: Final = PrimedGone.PRIMED_GONE


class Opening(SessionState):
    """Opening a session, from accept to the broker's Open-Ok."""

    __slots__ = ()

    if TYPE_CHECKING:
        # Of the other parts: closing a peer (closing.py), session control (session.py).
        async def _close_client(
            self,
            code: int,
            text: str,
            class_id: int = 0,
            method_id: int = 0,
            *,
            answer_within: float | None = None,
        ) -> None: ...
        async def _send_quietly(self, peer: Transport, data: bytes) -> None: ...
        def pause(self) -> bool: ...
        def disconnect(self, end: End, reason: str) -> bool: ...
        def _release(self, pause: Pause) -> None: ...
        async def _open_pooled(
            self, pool: Pool, opened: ClientOpened, route: Route, allowed: Allow
        ) -> BrokerOpened | None: ...

    async def _open(self) -> Opened | None:
        """Steps 1 to 6, inside the opening scope that a disconnect cancels: what
        forwarding starts from, or None once the session is over (the client told why
        where that is owed). A disconnect asked for meanwhile is the caller's to act on.

        The opening scope is the only cancel scope of a session's opening (a scope costs
        tens of interpreter steps to enter and leave): its deadline bounds the phase under
        way, the client handshake and then the broker replay, and is lifted between them
        (admission, the hold at Open and the connect are bounded their own way). A
        deadline that fires is told apart from a disconnect by ``_pending_end``, and the
        phase by whether a broker was connected yet (``_timed_out``).
        """
        opened: ClientOpened | None = None
        open_ok: BrokerOpened | None = None
        deadline = trio.current_time() + self.settings.timeouts.client_handshake
        with trio.CancelScope(deadline=deadline) as scope:
            self._opening = scope
            opened = await self._client_handshake()
            scope.deadline = math.inf
            if opened is not None:
                opened = await self._admit_at_open(opened)
            if opened is not None:
                opened = await self._hold_at_open(opened)
            if opened is not None:
                open_ok = await self._open_broker(opened)
        self._opening = None
        if scope.cancelled_caught and self._pending_end is None:
            await self._timed_out()
            return None
        if opened is None or open_ok is None:
            return None
        return Opened(opened.tune, opened.pending, open_ok.open_ok + open_ok.pending)

    async def _timed_out(self) -> None:
        """The opening scope's deadline fired: the client handshake's (no broker yet), or
        the broker replay's (the client is told)."""
        if self.broker is None or self.backend is None:
            timeout = self.settings.timeouts.client_handshake
            self.log.warning("client handshake timed out", timeout=timeout)
            return
        timeout = self.settings.timeouts.broker_handshake
        self.log.warning("broker handshake timed out", timeout=timeout)
        await self._close_client(
            constants.CONNECTION_FORCED,
            f"CONNECTION_FORCED - broker {self.backend.label} did not complete the handshake "
            f"within {timeout:g}s",
        )

    async def _client_handshake(self) -> ClientOpened | None:
        """The client's handshake up to its Open; None once it failed (the client told
        where that is owed). Bounded by the opening scope's deadline (``_open``)."""
        machine = ClientHandshake(self.settings.tune)
        began = time.monotonic()
        if self._start_client is not None and not await self._start():
            return None
        try:
            event: ClientOpened | PeerClosed = await converse(self.client, machine)
            if isinstance(event, ClientOpened):
                self.context.events.client_opened(cast("Session", self), time.monotonic() - began)
                self.vhost = event.vhost
                self.connection_name = event.start_ok.connection_name
                self.identity = identify(event.start_ok)
                self.log = self.log.bind(vhost=event.vhost, connection_name=self.connection_name)
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

    async def _admit_at_open(self, opened: ClientOpened) -> ClientOpened | None:
        """Ask the server's limits whether this client may open its vhost; a refused
        client waits ``LIMITED_CLOSE_DELAY`` (within the opening scope: a disconnect or
        shutdown ends the wait) and gets the refusal's Close."""
        admission = self.context.admit(self.id, opened.vhost)
        if isinstance(admission, Admitted):
            self.alarmed = admission.alarmed
            self.data_budget = admission.data_budget
            return opened
        self.limited = True
        self.log.info("client limited at Connection.Open", reply_text=admission.reply_text)
        await trio.sleep(LIMITED_CLOSE_DELAY)
        await self._close_client(admission.reply_code, admission.reply_text)
        return None

    async def _hold_at_open(self, opened: ClientOpened) -> ClientOpened | None:
        """Hold a paused client at Connection.Open until resumed (pause.py); None if it ended."""
        if self.context.vhost_opened(opened.vhost):
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

    async def _open_broker(self, opened: ClientOpened) -> BrokerOpened | None:
        self.state = State.CONNECTING
        health = self.context.health
        try:
            # Backends marked down are tried last (routing.health).
            down = health.down() if health is not None else ()
            # The client's address (a PROXY header's source) picks rules and sticky entries.
            route = self.context.routing().route(opened.vhost, self.client_address[0], down)
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
        pool = self.context.pool
        # A data-rate limit paces one client's reads, which a shared broker connection
        # cannot do for one client alone: such a client gets a connection of its own.
        if pool is not None and self.data_budget is None and self.context.pooled(opened.vhost):
            return await self._open_pooled(pool, opened, route, allowed)
        return await self._connect_and_replay(opened, candidates, allowed)

    async def _connect_and_replay(
        self,
        opened: ClientOpened,
        candidates: Sequence[Backend],
        allowed: Allow,
        tune: TuneParams | None = None,
    ) -> BrokerOpened | None:
        """Steps 5 and 6: the broker's Open-Ok, or None once the client was told why not.
        ``tune``: what the broker is told in place of the client's agreement (a pooled
        connection's own)."""
        route = self.route
        assert route is not None
        began = time.monotonic()
        take_primed = self.context.take_primed
        while True:
            connected = await connect_first(
                self.context,
                candidates,
                self.client_address,  # a PROXY header's source, once the client started
                self.log,
                take_primed,
            )
            if not isinstance(connected, tuple):
                break
            backend, broker, greeted = connected
            self.broker, self.backend = broker, backend
            route.landed(backend)
            self.broker_address = shared(broker.peer_name())  # every session's to it
            self.broker_local = broker.local_name()
            self.log = self.log.bind(backend=backend.name)
            open_ok = await self._broker_handshake(opened, backend, allowed, greeted, tune)
            if open_ok is PRIMED_GONE:
                # The broker closed the primed connection between the pool's check and
                # the replay, before answering it: the client has been told nothing, so
                # it gets a fresh connection instead of a 320 (once: never primed again).
                self.log.info("primed broker connection closed before use; connecting again")
                broker.close()
                take_primed = None
                continue
            if open_ok is not None:
                self.context.events.broker_opened(cast("Session", self), time.monotonic() - began)
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
        authorize = self.context.authorize
        if authorize is None:
            return _ALLOW_ALL
        mechanism, credentials = properties.start_ok_sasl(opened.start_ok.raw)
        query = AuthQuery(
            vhost=opened.vhost,
            mechanism=mechanism,
            credentials=credentials,
            client_host=self.context.host_name(self.client_address[0]),
            connection_name=self.connection_name or "",
        )
        decision = await ask(authorize, query, self.settings.timeouts.auth)
        if isinstance(decision, Allow):
            self.log.debug("auth service allowed", reason=decision.reason)
            return decision
        self.auth_denied = True
        # The detail (the service's URL and error) is the log's alone, never the client's.
        self.log.error(
            f"Disconnecting unauthenticated/unauthorized client, reason: {decision.reason}",
            **({"detail": decision.detail} if decision.detail else {}),
        )
        client_properties = opened.start_ok.client_properties
        if properties.has_capability(client_properties, "authentication_failure_close"):
            # Class and method of StartOk, as amqpprox (and RabbitMQ) say; the text is cut
            # to the 255 octets of a short string.
            await self._close_client(constants.ACCESS_REFUSED, decision.reason, 10, 11)
        return None

    async def _broker_handshake(
        self,
        opened: ClientOpened,
        backend: Backend,
        allowed: Allow,
        greeted: bool,
        tune: TuneParams | None = None,
    ) -> BrokerOpened | PrimedGone | None:
        """The broker's Open-Ok; None once the client has been told why not; PRIMED_GONE
        (nothing told) when a primed connection turned out closed before any answer."""
        assert self.broker is not None
        broker = self.broker
        local_port = self.broker_local[1]
        extra = {
            "amqprouter_client": endpoint(
                (self.context.host_name(self.client_address[0]), self.client_address[1])
            ),
            "amqprouter_host": f"(:{self.listen_port}) {HOSTNAME}:{local_port}",
        }
        if allowed.reason:
            extra["amqprouter_auth"] = allowed.reason
        try:
            machine = BrokerHandshake(
                # MAP ... AS: the broker opens the renamed vhost (the route records it);
                # everything of the router's own keeps the client's.
                vhost=opened.vhost
                if self.route is None or self.route.broker_vhost is None
                else self.route.broker_vhost,
                start_ok=opened.start_ok,
                client_tune=opened.tune if tune is None else tune,
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
            local=endpoint(self.broker_local),
            primed=greeted,
        )
        if not machine.properties_added:
            # The broker would reset a StartOk over 4096 bytes: this one goes unchanged.
            self.log.info("client properties too large to add amqprouter_client to")
        # Bounded by the opening scope's deadline, set for this phase (``_open``).
        assert self._opening is not None
        self._opening.deadline = trio.current_time() + self.settings.timeouts.broker_handshake
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
                # Connecting again is bounded per attempt (connect.py), not by this phase.
                self._opening.deadline = math.inf
                return PRIMED_GONE
            self.log.warning("broker closed during handshake", error=str(exc))
            await self._close_client(
                constants.CONNECTION_FORCED,
                f"CONNECTION_FORCED - broker {backend.label} closed the connection "
                "during the handshake",
            )
            return None
