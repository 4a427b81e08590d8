"""Primed broker connections: the client-independent start of a broker connection, done early.

RabbitMQ spends most of a connection's set-up between the protocol header and its
Connection.Start (about 700 µs on the benchmark machine), and nothing sent up to that
Start depends on the client. So, per backend in use, the pool keeps a few connections
that have connected, finished TLS (a TLS backend) and read the broker's Start
(``BrokerGreeting``); a session whose client's Open is routed there takes one and
replays the rest of the handshake at once (``BrokerHandshake(greeted=True)``).

What keeps it honest:

* **It follows demand.** A backend nobody connects to has no pool. Each backend's
  recent demand (sessions that asked for it in the last ``DEMAND_WINDOW`` seconds)
  sizes its pool: nothing below ``MIN_DEMAND``, then as many as the busiest ``BUCKET``
  seconds of that window asked for, at most ``max_per_backend``.
* **Nothing stale reaches a client.** A primed connection is retired after ``MAX_AGE``
  seconds, half RabbitMQ's 10 s handshake timeout, so the broker never closes one under a
  client; before one is handed out it is checked for bytes or an end of stream (a
  broker that closed it, or said anything after its Start) and discarded if it has
  either. Taken oldest first, so steady demand uses them before they age.
* **It forgets a backend that changed.** A primed connection is kept only while its
  ``Backend`` value is the one in the routing table, enabled and not down (``usable``):
  BACKEND DISABLE, DRAIN, DELETE, a changed address or flag, and a health DOWN all
  empty the pool (at once when the server calls ``wake``, else within ``TICK``).
  SEND-PROXY backends are never primed: their first bytes name the client.
* **It backs off.** A backend that fails a priming attempt is not primed again for
  ``RETRY_AFTER`` seconds; sessions still connect to it the ordinary way, and only
  their failures count for its health.

``stats`` counts what the broker sees of it: connections opened, used, discarded.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from amqprouter.net.resolver import Resolver
from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import Transport, converse
from amqprouter.protocol import BrokerGreeted, BrokerGreeting, PeerClosed, ProtocolError
from amqprouter.routing import Backend
from amqprouter.session.connect import WrapBackend, connect_backend

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("amqprouter.primed")

#: A primed connection older than this is closed unused: RabbitMQ closes a connection
#: whose handshake is not done 10 s after it opened; a client handed one at this age
#: still has 5 s for its Tune and Open.
MAX_AGE: Final = 5.0
#: Demand is counted over this many seconds.
DEMAND_WINDOW: Final = 5.0
#: Below this many sessions in the window a backend has no pool: a primed connection
#: for it would mostly age out unused, an open and a close on the broker for nothing.
MIN_DEMAND: Final = 2
#: The pool holds as many connections as sessions asked for in the busiest slice of this
#: many seconds within the window: a burst like the last one finds them ready, and a
#: steady stream finds one while the pool refills (a refill takes about a millisecond).
BUCKET: Final = 0.1
#: How often the pool looks at every backend without being woken (ages, health).
TICK: Final = 0.25
#: After a failed priming attempt a backend is left alone this long.
RETRY_AFTER: Final = 5.0
#: A demand slice's count ([slice number, count]).
_COUNT: Final[Callable[[list[int]], int]] = operator.itemgetter(1)
#: The client address a primed connection is made for: none (SEND-PROXY is never primed).
_NO_CLIENT: Final = ("", 0)

#: Open one primed connection to a backend; raises OSError, PeerGone or ProtocolError.
Prime = Callable[[Backend], Awaitable[Transport]]
#: Whether a backend may have primed connections now (in the table as is, enabled, up).
Usable = Callable[[Backend], bool]


@attrs.define
class PoolStats:
    """What the pool cost the brokers: every connection it opened, and where it went."""

    opened: int = 0  # primed connections that reached Start
    used: int = 0  # handed to a session
    missed: int = 0  # a session found none ready and connected the ordinary way
    discarded: int = 0  # closed unused: aged out, backend changed or down, found dead
    failed: int = 0  # priming attempts that failed (connect, TLS, no Start)


class _BackendPool:
    """One backend's primed connections and recent demand."""

    __slots__ = ("demand", "in_flight", "ready", "retry_at")

    def __init__(self) -> None:
        self.ready: deque[tuple[float, Transport]] = deque()  # (primed at, transport)
        self.in_flight = 0
        # Sessions that asked, per BUCKET-second slice: [slice number, count], oldest first.
        self.demand: deque[list[int]] = deque()
        self.retry_at = 0.0

    def asked(self, now: float) -> None:
        bucket = int(now / BUCKET)
        if self.demand and self.demand[-1][0] == bucket:
            self.demand[-1][1] += 1
        else:
            self.demand.append([bucket, 1])

    def target(self, now: float, max_size: int) -> int:
        demand = self.demand
        oldest = int((now - DEMAND_WINDOW) / BUCKET)
        while demand and demand[0][0] < oldest:
            demand.popleft()
        # Up to 50 slices, asked about on every take: counted in C (map, itemgetter),
        # not by a generator resumed per slice.
        if sum(map(_COUNT, demand)) < MIN_DEMAND:
            return 0
        return min(max_size, max(map(_COUNT, demand)))


async def prime_connection(
    resolver: Resolver,
    backend: Backend,
    *,
    connect_timeout: float,
    greeting_timeout: float,
    wrap: WrapBackend | None,
) -> Transport:
    """Connect to ``backend`` (wrapped: TLS), send the protocol header, read its Start.

    Raises OSError (connect, TLS, timeout), PeerGone or ProtocolError; nothing is left
    open on failure.
    """
    outcome = await connect_backend(
        resolver, backend, connect_timeout, wrap, _NO_CLIENT, log.bind(backend=backend.name)
    )
    if isinstance(outcome, list):
        raise OSError("; ".join(outcome))
    transport = outcome
    try:
        greeting = BrokerGreeting(backend.name)
        with trio.move_on_after(greeting_timeout):
            event: BrokerGreeted | PeerClosed = await converse(transport, greeting)
            if not isinstance(event, BrokerGreeted):
                raise OSError(f"broker refused the connection: {event.reply_text}")
            if event.pending:
                raise OSError("broker sent more than its Connection.Start")
            return transport
        raise OSError(f"no Connection.Start within {greeting_timeout:g}s")
    except BaseException:
        transport.close()
        raise


def _alive(transport: Transport) -> bool:
    """Nothing to read and no end of stream: a broker still waiting for our StartOk."""
    try:
        transport.recv(1)  # bytes or b"": the broker closed it or broke the protocol
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


class PrimedPool:
    """Primed connections per backend (see the module docstring); run ``run`` in a nursery."""

    def __init__(self, prime: Prime, usable: Usable, *, max_per_backend: int) -> None:
        self._prime = prime
        self._usable = usable
        self.max_per_backend = max_per_backend
        self.stats = PoolStats()
        self._pools: dict[Backend, _BackendPool] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None  # where fills run, while ``run`` does
        # Bumped by ``clear``: a connection primed under an older generation is not kept.
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.max_per_backend > 0

    def ready(self) -> int:
        """Primed connections held now, over every backend."""
        return sum(len(pool.ready) for pool in self._pools.values())

    def take(self, backend: Backend) -> Transport | None:
        """A live primed connection to ``backend``, or None (connect the ordinary way).

        Counts as demand either way, so a backend's pool grows from its first sessions.
        """
        if not self.enabled or backend.send_proxy:
            return None
        now = trio.current_time()
        pool = self._pools.get(backend)
        if pool is None:
            pool = self._pools[backend] = _BackendPool()
        pool.asked(now)
        usable = self._usable(backend)
        if not usable:
            self._discard(pool, len(pool.ready))
        found = None
        while pool.ready:
            primed_at, transport = pool.ready.popleft()
            if now - primed_at < MAX_AGE and _alive(transport):
                found = transport
                break
            transport.close()
            self.stats.discarded += 1
        if found is None:
            self.stats.missed += 1
        else:
            self.stats.used += 1
        if usable:  # refill at once, from here: what this took, or a new pool's first ones
            self._start_fills(backend, pool, pool.target(now, self.max_per_backend), now)
        return found

    def wake(self) -> None:
        """Look at every backend now (the routing table or health changed)."""
        self._wake.set()

    def clear(self) -> None:
        """Close every primed connection, and those being primed once they are (TLS
        settings changed: they were made with the old ones)."""
        self._generation += 1
        for pool in self._pools.values():
            self._discard(pool, len(pool.ready))
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pools filled and fresh until cancelled; closes what it holds on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    with trio.move_on_after(TICK):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    self._maintain()
        finally:
            self._nursery = None
            for pool in self._pools.values():
                self._discard(pool, len(pool.ready))

    def _maintain(self) -> None:
        now = trio.current_time()
        for backend, pool in list(self._pools.items()):
            ready = pool.ready
            while ready and now - ready[0][0] >= MAX_AGE:
                ready.popleft()[1].close()
                self.stats.discarded += 1
            target = pool.target(now, self.max_per_backend)
            if target and not self._usable(backend):
                target = 0
            if len(ready) > target:
                self._discard(pool, len(ready) - target)
            if not ready and not pool.in_flight and not pool.demand:
                del self._pools[backend]  # nobody has asked for it lately
                continue
            self._start_fills(backend, pool, target, now)

    def _start_fills(self, backend: Backend, pool: _BackendPool, target: int, now: float) -> None:
        """Start priming what ``pool`` lacks of ``target`` (unless backing off)."""
        if now < pool.retry_at or self._nursery is None:
            return
        for _ in range(target - len(pool.ready) - pool.in_flight):
            pool.in_flight += 1
            self._nursery.start_soon(self._fill, backend, pool)

    def _discard(self, pool: _BackendPool, count: int) -> None:
        """Close the ``count`` newest primed connections of ``pool`` (they'd age out last)."""
        for _ in range(count):
            pool.ready.pop()[1].close()
            self.stats.discarded += 1

    async def _fill(self, backend: Backend, pool: _BackendPool) -> None:
        generation = self._generation
        try:
            transport = await self._prime(backend)
        except (OSError, PeerGone, ProtocolError) as exc:
            pool.in_flight -= 1
            pool.retry_at = trio.current_time() + RETRY_AFTER
            self.stats.failed += 1
            log.info(
                "cannot prime a broker connection",
                backend=backend.name,
                error=str(exc),
                retry_in=RETRY_AFTER,
            )
            return
        except BaseException:
            pool.in_flight -= 1
            raise
        pool.in_flight -= 1
        self.stats.opened += 1
        kept = self._pools.get(backend) is pool and generation == self._generation
        if kept and self._usable(backend):
            pool.ready.append((trio.current_time(), transport))
        else:  # the backend changed or went while this was being primed
            transport.close()
            self.stats.discarded += 1
