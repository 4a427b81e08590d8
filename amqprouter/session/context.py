"""What every session of one server shares: one frozen ``SessionContext``.

A session needs a dozen things of the server it runs in: the routing snapshot, the
resolver, backend health, the auth service, the primed pool, the watchdog, the
limits' verdict at Connection.Open, the events hooks and the settings. The server
builds them into one ``SessionContext`` and hands that to each session it starts,
with the values that are the connection's own (its transport, listen port, start
hook), as hypercorn's protocols take one ``WorkerContext``. The context is frozen:
when a part of it changes (AUTH SERVICE, the /metrics observer), the server builds
the next one, and a session keeps the one of the moment it started.

Admission is a value, not a side effect: ``admit`` answers with ``Admitted`` (whether
an alarm-only limit fired, and the vhost's data budget) or ``Refused`` (the Close the
client gets), and the session records what it was told.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from amqprouter.net.engine import Engine
from amqprouter.net.resolver import Resolver
from amqprouter.routing import RoutingTable
from amqprouter.routing.health import HealthRegistry
from amqprouter.routing.rate_window import DataBudget
from amqprouter.session.auth import Authorize
from amqprouter.session.connect import OpenConnection, TakePrimed, WrapBackend, open_tcp
from amqprouter.session.metrics_hooks import NO_EVENTS, SessionEvents
from amqprouter.session.pool import Pool
from amqprouter.session.settings import SessionSettings
from amqprouter.session.trace import FrameObserver
from amqprouter.session.watch import Watchdog


@attrs.frozen
class Admitted:
    """The client may open its vhost. ``alarmed``: an alarm-only limit would have
    refused it (counted by statistics); ``data_budget``: its vhost's client→broker
    byte budget (LIMIT DATA_RATE[_ALARM]), None without one."""

    alarmed: bool = False
    data_budget: DataBudget | None = None


@attrs.frozen
class Refused:
    """A limit refused the client at Connection.Open: the Close it gets."""

    reply_code: int
    reply_text: str


#: Asked once per session at Connection.Open with (session id, vhost).
Admit = Callable[[int, str], Admitted | Refused]

_ADMIT_ALL = Admitted()


def _admit_all(session_id: int, vhost: str) -> Admitted | Refused:
    return _ADMIT_ALL


def _never_paused(vhost: str) -> bool:
    return False


def _never_traced(vhost: str) -> Sequence[FrameObserver]:
    return ()


def _never_pooled(vhost: str) -> bool:
    return False


@attrs.frozen
class SessionContext:
    """The server's services and hooks, as every session of it sees them."""

    settings: SessionSettings
    #: The live routing snapshot; read once, when the client's Open names its vhost.
    routing: Callable[[], RoutingTable]
    resolver: Resolver
    #: Backend health: failed connects are reported, backends down are tried last.
    health: HealthRegistry | None = None
    #: An address's host name once known (MAPHOSTNAME DNS), else the address.
    host_name: Callable[[str], str] = str
    #: Told each vhost at Connection.Open; True means "paused: hold the client there".
    vhost_opened: Callable[[str], bool] = _never_paused
    #: The limits' verdict at Connection.Open, before the pause hold and routing.
    admit: Admit = _admit_all
    #: Wraps each backend connection (TLS, PROXY header), inside the connect timeout.
    wrap_backend: WrapBackend | None = None
    #: Heartbeat and write-timeout supervision; its clock is the sessions' clock.
    watchdog: Watchdog | None = None
    #: The auth service (AUTH SERVICE); None allows every client.
    authorize: Authorize | None = None
    #: Hands out a primed broker connection (server/primed.py) before connecting afresh.
    take_primed: TakePrimed | None = None
    #: Handshake and connect latencies, failed connects (metrics_hooks.py; for /metrics).
    events: SessionEvents = NO_EVENTS
    #: How a backend address is connected to: TCP (tests: a MemoryTransport's peer).
    open_connection: OpenConnection = open_tcp
    #: The forwarding engine (``--forwarding engine``): plain sessions forward through
    #: it after Open-Ok; None forwards every session with its own pump tasks.
    engine: Engine | None = None
    #: The VHOST TRACEs on a vhost, asked once per session as it starts forwarding.
    vhost_traces: Callable[[str], Sequence[FrameObserver]] = _never_traced
    #: Pooling mode (pool.py): the shared broker connections; None turns it off.
    pool: Pool | None = None
    #: Whether a vhost's clients are pooled (``--pool``, MAP POOL), asked at Open.
    pooled: Callable[[str], bool] = _never_pooled
