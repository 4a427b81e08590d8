"""What one session knows: the stage of its life and every attribute its parts share.

A session is cut along its life into parts, one module each (``opening.py``,
``forwarding.py``, ``closing.py``, the supervision check in ``watch.py``, session
control in ``session.py``), and ``Session`` is all of them over this one state. Every
attribute is declared here, once, as a slot: thousands of idle sessions, so no dict
per session, and each part reads and writes the same slots (an attribute read costs
the same from any part).
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from amqprouter.net.sockets import endpoint, shared
from amqprouter.net.transport import Transport, Writing
from amqprouter.protocol import FrameScanner, constants
from amqprouter.protocol.client_identity import UNKNOWN, ClientIdentity

if TYPE_CHECKING:
    from amqprouter.net.engine import Link
    from amqprouter.routing import Backend, Route
    from amqprouter.routing.rate_window import DataBudget
    from amqprouter.session.closing import End
    from amqprouter.session.connect import StartClient
    from amqprouter.session.context import SessionContext
    from amqprouter.session.pause import Pause
    from amqprouter.session.pool import BrokerLink, PooledClient
    from amqprouter.session.trace import Tap
    from amqprouter.session.watch import Handle

log = structlog.get_logger("amqprouter.session")

_ids = itertools.count(1)


def number_sessions_from(first: int) -> None:
    """Give the sessions started from now on the ids ``first``, ``first + 1``...: a
    worker of ``--workers`` starts at its serial number times 2**32, so that ids are
    unique across the workers and name the worker that holds the session."""
    global _ids
    _ids = itertools.count(first)


class State(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionState:
    """The state of one routed connection, readable by the control plane and stats."""

    # Thousands of idle sessions: slots instead of a dict per session.
    __slots__ = (
        "_back",
        "_blocked",
        "_close_ok_forwarded",
        "_closed_by",
        "_cut",
        "_forward_end",
        "_forwarding",
        "_forwarding_tasks",
        "_heartbeat",
        "_link",
        "_link_of_pool",
        "_now",
        "_opening",
        "_pause",
        "_pending_end",
        "_pooled",
        "_start_client",
        "_trace",
        "_watch_handle",
        "_watch_since",
        "_writing",
        "alarmed",
        "auth_denied",
        "backend",
        "broker",
        "broker_address",
        "broker_local",
        "client",
        "client_address",
        "client_cut",
        "client_local",
        "connection_name",
        "context",
        "data_budget",
        "egress",
        "end_reason",
        "ended",
        "id",
        "identity",
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
        context: SessionContext,
        *,
        listen_port: int,
        start: StartClient | None = None,
        data_budget: DataBudget | None = None,
    ) -> None:
        self.id = next(_ids)
        #: The server's services and hooks, as of the moment this session started.
        self.context = context
        self.settings = context.settings
        #: The two transports (connect.py says how new kinds plug in).
        self.client = client
        self.broker: Transport | None = None
        # Run first, inside the client handshake timeout (a TLS handshake, say).
        self._start_client = start
        #: The auth service said DENY (CONN's authDenied, STAT's authDenied count).
        self.auth_denied = False
        self.listen_port = listen_port
        self.state = State.HANDSHAKE
        self.vhost: str | None = None
        self.backend: Backend | None = None
        #: The routing decision (which mapping and rule, the candidates); it holds the
        #: backend's session count and a sticky client's entry until ``run`` ends.
        self.route: Route | None = None
        self.connection_name: str | None = None
        #: The client's product, version, platform and SASL user (StartOk), bounded.
        self.identity: ClientIdentity = UNKNOWN
        self.client_address = client.peer_name()
        self.client_local = shared(client.local_name())  # the listener's: shared
        self.broker_address: tuple[str, int] = ("0.0.0.0", 0)
        self.broker_local: tuple[str, int] = ("0.0.0.0", 0)
        # The clock of last_ingress/last_egress: time.monotonic, unless a test's watchdog
        # runs on trio's (virtual) clock. A slot read costs what ``time.monotonic`` does.
        watchdog = context.watchdog
        self._now: Callable[[], float] = time.monotonic if watchdog is None else watchdog.clock
        # When each direction last carried data (``_now``), for CONN's idle times and
        # the watchdog.
        self.last_ingress = self.last_egress = self._now()
        self.started = time.time()
        self.ended: End | None = None
        #: Why the router cut the client at the end instead of completing the close
        #: handshake (it did not answer Close in time, or a write to it was under way);
        #: None when it was not cut that way (the SIGTERM drain counts and names these).
        self.client_cut: str | None = None
        #: Set by SESSION/VHOST PAUSE: client data is held, not forwarded (session control).
        self.paused = False
        #: Why the router ended the session on purpose (with an ``End.OPERATOR*``).
        self.end_reason: str | None = None
        #: Set when a LIMIT refused the client at Connection.Open; ``alarmed`` when an
        #: alarm-only limit would have (the admission's answer, counted by statistics).
        self.limited = False
        self.alarmed = False
        #: The client→broker byte budget (LIMIT DATA_RATE[_ALARM]); None costs the pump
        #: nothing. The DEFAULT's from accept, the vhost's from admission; replaced by the
        #: server when the limits change.
        self.data_budget = data_budget
        # The current pause, until every user of it is done (pause.py). The ingress
        # pump looks at it once per read.
        self._pause: Pause | None = None
        # The End a disconnect or the watchdog asked for and not yet acted on, delivered
        # by cancelling a scope: ``_opening`` before forwarding, ``_forwarding`` during
        # (which is ``_cut``, the scope of the session's opening and forwarding);
        # ``_cut`` for a forced disconnect (closing runs in a ``_cut`` of its own).
        self._pending_end: End | None = None
        self._cut = trio.CancelScope()
        self._opening: trio.CancelScope | None = None
        # The nursery the pumps run in while forwarding (the session's own): a pause
        # starts the heartbeat keeper there (session control, ``_start_keeper``).
        self._forwarding_tasks: trio.Nursery | None = None
        # Set on the task path when the session may go back into the forwarding engine
        # (an unpause, a data-rate limit lifted): each pump stops at its next park.
        self._back = False
        self._heartbeat = 0
        # Supervision while forwarding (``watch_check``): this session's place in the
        # server's watchdog, when client→broker supervision last (re)started (a resume,
        # an Unblocked), and whether the broker has blocked the connection.
        self._watch_handle: Handle | None = None
        self._watch_since = 0.0
        self._blocked = False
        # Counters: ingress = client→broker, egress = broker→client (bytes, frames, reads).
        self.ingress = FrameScanner(constants.FRAME_MIN_SIZE)
        self.egress = FrameScanner(constants.FRAME_MIN_SIZE)
        self._forwarding: trio.CancelScope | None = None
        # Why forwarding ended: the first direction (or the engine's outcome) to say.
        self._forward_end: End | None = None
        # While the forwarding engine moves this session's bytes (net/engine.py): its
        # link there, which a pause evicts.
        self._link: Link | None = None
        # SESSION/VHOST TRACE and SESSION CAPTURE (trace.py): what watches this session's
        # frames; None costs a pump one slot read per read, and keeps the engine open.
        self._trace: Tap | None = None
        # Pooling mode (pooling.py): the shared broker connection this session is a
        # client of, and its place there; None for a session with a broker of its own.
        self._link_of_pool: BrokerLink | None = None
        self._pooled: PooledClient | None = None
        # Transports with a write in progress. A pump cancelled mid-write leaves its peer's
        # stream inside a frame, where a Close would be garbage: such a peer is just cut.
        self._writing = Writing()
        # A Connection.Close-Ok was scanned in a pump's read: the close handshake is
        # complete once that read is forwarded, and forwarding ends CLEAN.
        self._close_ok_forwarded = False
        # Who sent the Connection.Close that ended forwarding, its code and text.
        self._closed_by: tuple[str, int, str] | None = None
        self.log = log.bind(session=self.id, client=endpoint(self.client_address))

    @property
    def pool_link(self) -> int | None:
        """The id of the shared broker connection a pooled session uses (CONN)."""
        link = self._link_of_pool
        return None if link is None else link.id
