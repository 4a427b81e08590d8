"""Statistics: the per-interval snapshot over every session, and running totals.

Theory of operation
-------------------

Every interval (``--cleanup-interval-ms``) ``StatsCollector.collect`` walks
``Server.sessions`` once and builds a ``StatsSnapshot``: amqpprox's axes
(overall, vhosts, backends by ``host_port``, sources by client host) of its 13
``ConnectionStats`` fields (reference/amqpprox.md section 4), and ours,
``alarmedConnectionCount``, after them.

* Traffic fields are **deltas over the interval**: the collector remembers each
  session's counters from the previous interval (one small ``_Seen`` record per
  session). A session that ended is handed over by the server's end-of-session
  hook (``session_ended``) with its final counters, so the traffic of its last
  interval is never lost, and it is counted once in a ``removed*`` field.
* State fields (paused, active) are gauges of the moment. ``limited`` (clients a
  LIMIT refused) and ``alarmed`` (ours: connections that set off an alarm-only
  LIMIT) count the sessions that ended in the interval, as amqpprox's gauge counts
  them until its cleanup removes them.
* authDenied counts the
  sessions the auth service denied that ended in the interval (a denied session
  ends at once, so a gauge of the moment would almost never see one).
* The walk is the cost that grows with sessions (5,000 idle sessions every
  second), so it allocates nothing per idle session beyond the first sight of one:
  the axis key of a session is computed once and kept in its record, and counters
  are compared before anything is added.
* Each session's **rates** over the last interval (``session_rates``: bytes and
  frames per second each way, for CONN and the status page) are kept in the same
  record: one small object for a session that moved data, the shared ``NO_RATES``
  for an idle one.

Sessions are summed into one internal axis keyed by (vhost, backend name,
``host_port``); vhosts, backends, overall and the Prometheus families are sums of
that small axis, so the per-session work is two dictionary look-ups.

Running totals of the traffic and the removals (for Prometheus counters, which
must never go down) are kept per (vhost, backend name).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, ClassVar, Final, TypeVar

import attrs

from amqprouter.observe.process import ProcessSampler, ProcessStats
from amqprouter.session import End, State
from amqprouter.session.pool import PoolFigures

if TYPE_CHECKING:
    from amqprouter.session import Session

#: The backends-axis key of a session without a broker connection (amqpprox's).
NO_BACKEND: Final = "0.0.0.0_0"
_LIVE: Final = frozenset({State.HANDSHAKE, State.CONNECTING, State.OPEN})
#: Running totals (Prometheus series) are kept for at most this many (vhost, backend)
#: pairs; traffic of further pairs is added to (OTHER_VHOST, backend). A client can
#: name any vhost in Connection.Open, so without a bound the series would grow forever.
MAX_TOTALS: Final = 1000
OTHER_VHOST: Final = "__other__"


class Removal(enum.IntEnum):
    """Why a session was removed: which ``removed*`` field counts it."""

    GRACEFUL = 0
    BROKER_SNAPPED = 1
    CLIENT_SNAPPED = 2
    #: Ended before forwarding began (see ``removal``); counted as GRACEFUL in the
    #: amqpprox fields, and on its own in Prometheus.
    HANDSHAKE = 3


#: The ends that are a peer's fault. Every other End (a clean close by either side,
#: a close-handshake timeout, an operator or proxy disconnect, any End added later)
#: is graceful.
_SNAPPED: Final[Mapping[End, Removal]] = {
    End.BROKER_GONE: Removal.BROKER_SNAPPED,
    End.BROKER_ERROR: Removal.BROKER_SNAPPED,
    End.CLIENT_GONE: Removal.CLIENT_SNAPPED,
    End.CLIENT_ERROR: Removal.CLIENT_SNAPPED,
    End.BROKER_SILENT: Removal.BROKER_SNAPPED,
    End.BROKER_STUCK: Removal.BROKER_SNAPPED,
    End.CLIENT_SILENT: Removal.CLIENT_SNAPPED,
    End.CLIENT_STUCK: Removal.CLIENT_SNAPPED,
}


def removal(ended: End | None) -> Removal:
    """How a finished session is counted.

    ``ended`` None means the session never forwarded: the client left or was
    refused during the handshake (no mapping, no broker reachable, the broker's own
    refusal). No established session was snapped, and the router closed it with a
    Close where it could, so it counts as graceful (and as HANDSHAKE in Prometheus).
    """
    if ended is None:
        return Removal.HANDSHAKE
    return _SNAPPED.get(ended, Removal.GRACEFUL)


@attrs.define
class ConnectionStats:
    """amqpprox's ConnectionStats: 13 figures for one entity over one interval, and
    ours, ``alarmed``.

    ``FIELDS`` are the JSON names in amqpprox's order (ours last), with the attribute
    holding each. ``removed_in_handshake`` is ours: the part of ``removed_graceful`` that
    never got past the handshake.
    """

    paused: int = 0
    active: int = 0
    auth_denied: int = 0
    limited: int = 0
    removed_graceful: int = 0
    removed_broker: int = 0
    removed_client: int = 0
    packets_received: int = 0
    packets_sent: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    alarmed: int = 0
    removed_in_handshake: int = 0

    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("pausedConnectionCount", "paused"),
        ("activeConnectionCount", "active"),
        ("authDeniedConnectionCount", "auth_denied"),
        ("limitedConnectionCount", "limited"),
        ("removedConnectionGraceful", "removed_graceful"),
        ("removedConnectionBrokerSnapped", "removed_broker"),
        ("removedConnectionClientSnapped", "removed_client"),
        ("packetsReceived", "packets_received"),
        ("packetsSent", "packets_sent"),
        ("framesReceived", "frames_received"),
        ("framesSent", "frames_sent"),
        ("bytesReceived", "bytes_received"),
        ("bytesSent", "bytes_sent"),
        ("alarmedConnectionCount", "alarmed"),  # ours
    )
    #: The state counts: StatsD gauges. The others are per-interval counters.
    GAUGES: ClassVar[frozenset[str]] = frozenset(
        {"paused", "active", "auth_denied", "limited", "alarmed"}
    )

    def add(self, other: ConnectionStats) -> None:
        for name in _STATS_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def items(self) -> list[tuple[str, int]]:
        """(JSON name, value) in amqpprox's order."""
        return [(key, getattr(self, name)) for key, name in self.FIELDS]

    def count_removal(self, reason: Removal) -> None:
        if reason is Removal.BROKER_SNAPPED:
            self.removed_broker += 1
        elif reason is Removal.CLIENT_SNAPPED:
            self.removed_client += 1
        else:
            self.removed_graceful += 1
            if reason is Removal.HANDSHAKE:
                self.removed_in_handshake += 1


_STATS_NAMES: Final = tuple(field.name for field in attrs.fields(ConnectionStats))


@attrs.frozen
class BufferStats:
    """What sessions hold in memory between reads: the partial frames of scanners.

    amqpprox reports its buffer pools; the router has none, so the same shape
    (``spill_to_heap_count`` and ``pools``) reports the partial-frame buffers:
    ``bytes`` held now and their high-water mark, ``buffers`` (how many scanners
    hold a partial frame) now and its high-water mark. ``spill_to_heap_count`` is
    always 0 (there is no pool to spill from); it is kept for amqpprox's readers.
    """

    bytes_current: int = 0
    bytes_highest: int = 0
    buffers_current: int = 0
    buffers_highest: int = 0
    spill_to_heap_count: int = 0

    def pools(self) -> list[tuple[str, int, int]]:
        """(pool name, current, highest), the rows of amqpprox's ``pools`` map."""
        return [
            ("bytes", self.bytes_current, self.bytes_highest),
            ("buffers", self.buffers_current, self.buffers_highest),
        ]


@attrs.frozen(slots=True)
class StoreState:
    """The shared configuration store's state (``--config-store``), as STAT shows it."""

    #: Reachable, and this router in step with it.
    up: bool
    #: The stored version this router applied last (0: none yet).
    version: int
    #: Seconds since the last successful read of the store; None: never read.
    since_read: float | None


@attrs.frozen
class StatsSnapshot:
    """One interval's statistics; what STAT LISTEN and STAT SEND render."""

    overall: ConnectionStats
    vhosts: Mapping[str, ConnectionStats]
    backends: Mapping[str, ConnectionStats]
    sources: Mapping[str, ConnectionStats]
    process: ProcessStats
    bufferpool: BufferStats
    #: Seconds the traffic deltas cover (for per-second rates).
    interval: float
    #: (vhost, backend name) → this interval's stats: what Prometheus gauges show.
    pairs: Mapping[tuple[str, str], ConnectionStats] = attrs.field(factory=dict)
    #: The configuration store's state; None without ``--config-store``.
    store: StoreState | None = None
    #: Pooling mode's shared broker connections; None while no vhost is pooled.
    pool: PoolFigures | None = None


def empty_snapshot(interval: float) -> StatsSnapshot:
    return StatsSnapshot(
        ConnectionStats(), {}, {}, {}, ProcessStats(), BufferStats(), interval=interval
    )


@attrs.frozen(slots=True)
class SessionRates:
    """One session's traffic per second over the last interval (CONN, the status page).

    in = client→broker, out = broker→client, as everywhere in the statistics.
    """

    in_bytes: float = 0.0
    out_bytes: float = 0.0
    in_frames: float = 0.0
    out_frames: float = 0.0


#: The rates of an idle session, or of one no collection has seen yet.
NO_RATES: Final = SessionRates()


class _Seen:
    """A session's counters at the previous collection, its rates over the last
    interval, and its cached axis keys."""

    __slots__ = (
        "address",
        "backend",
        "in_bytes",
        "in_frames",
        "in_reads",
        "key",
        "out_bytes",
        "out_frames",
        "out_reads",
        "rates",
        "source",
        "vhost",
    )

    def __init__(self, session: Session) -> None:
        self.in_bytes = self.in_frames = self.in_reads = 0
        self.out_bytes = self.out_frames = self.out_reads = 0
        self.rates = NO_RATES
        self.rekey(session)

    def rekey(self, session: Session) -> None:
        # Identity of these three changes only at the handshake's two steps (and the
        # client's certificate is known before the first of them, Connection.Open).
        self.source = source_key(session)
        self.vhost = session.vhost
        self.backend = session.backend
        self.address = address = session.broker_address
        backend_key = NO_BACKEND if address[1] == 0 else f"{address[0]}_{address[1]}"
        name = "" if session.backend is None else session.backend.name
        self.key = (session.vhost or "", name, backend_key)


def source_key(session: Session) -> str:
    """The per-source axis key: the client's address, or ``<CN>@<address>`` for a
    client that presented a verified certificate (mutual TLS). Characters a StatsD
    tag or a STAT filter cannot carry become ``_``."""
    host = session.client_address[0]
    subject = session.client.peer_subject()
    if subject is None:
        return host
    match = _COMMON_NAME.search(subject)
    name = _UNSAFE.sub("_", match.group(1)) if match else "cert"
    return f"{name}@{host}"


_COMMON_NAME: Final = re.compile(r"(?:^|,)CN=([^,]*)")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


@attrs.define
class Totals:
    """Running totals since start, per (vhost, backend name): Prometheus counters."""

    bytes_received: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    packets_received: int = 0
    packets_sent: int = 0
    removed: list[int] = attrs.field(factory=lambda: [0] * len(Removal))
    #: Clients refused by a LIMIT, and connections that set off an alarm-only one.
    limited: int = 0
    alarmed: int = 0
    #: Clients the auth service denied (AUTH SERVICE).
    auth_denied: int = 0

    def add(self, stats: ConnectionStats) -> None:
        self.bytes_received += stats.bytes_received
        self.bytes_sent += stats.bytes_sent
        self.frames_received += stats.frames_received
        self.frames_sent += stats.frames_sent
        self.packets_received += stats.packets_received
        self.packets_sent += stats.packets_sent
        self.removed[Removal.GRACEFUL] += stats.removed_graceful - stats.removed_in_handshake
        self.removed[Removal.HANDSHAKE] += stats.removed_in_handshake
        self.removed[Removal.BROKER_SNAPPED] += stats.removed_broker
        self.removed[Removal.CLIENT_SNAPPED] += stats.removed_client
        self.limited += stats.limited
        self.alarmed += stats.alarmed
        self.auth_denied += stats.auth_denied


_Key = tuple[str, str, str]
_K = TypeVar("_K", bound=Hashable)


class StatsCollector:
    """Builds a snapshot each interval over ``sessions``; keeps running totals.

    ``sessions`` is the server's live registry (read, never changed);
    ``session_ended`` must be called with every session the registry drops.
    """

    def __init__(
        self,
        sessions: Mapping[int, Session],
        interval: float,
        *,
        process: ProcessSampler | None = None,
    ) -> None:
        self.sessions = sessions
        self.interval = interval
        self.per_source = True
        self.totals: dict[tuple[str, str], Totals] = {}
        self.last = empty_snapshot(interval)
        self._process = process or ProcessSampler()
        self._seen: dict[int, _Seen] = {}
        self._ended: list[Session] = []
        self._bytes_highest = 0
        self._buffers_highest = 0

    def session_ended(self, session: Session) -> None:
        """The server's end-of-session hook: counted at the next collection."""
        self._ended.append(session)

    def collect(self) -> StatsSnapshot:
        """This interval's snapshot (also kept as ``last``); call once per interval."""
        pairs: dict[_Key, ConnectionStats] = {}
        sources: dict[str, ConnectionStats] = {}
        per_source = self.per_source
        seen = self._seen
        held_bytes = held_buffers = 0
        for session_id, session in self.sessions.items():
            record = seen.get(session_id)
            if record is None:
                record = seen[session_id] = _Seen(session)
            elif (
                session.broker_address is not record.address
                or session.vhost is not record.vhost
                or session.backend is not record.backend
            ):
                record.rekey(session)
            stats = pairs.get(record.key)
            if stats is None:
                stats = pairs[record.key] = ConnectionStats()
            source = None
            if per_source:
                source = sources.get(record.source)
                if source is None:
                    source = sources[record.source] = ConnectionStats()
            live = session.state in _LIVE
            paused = session.paused
            if live:
                stats.active += 1
            if paused:
                stats.paused += 1
            if source is not None:
                source.active += live
                source.paused += paused
            ingress, egress = session.ingress, session.egress
            pending = ingress.pending + egress.pending
            if pending:
                held_bytes += pending
                held_buffers += (ingress.pending > 0) + (egress.pending > 0)
            # Idle sessions stop here: neither direction's byte count moved.
            if ingress.bytes != record.in_bytes or egress.bytes != record.out_bytes:
                self._add_traffic(record, session, stats, source, self.interval)
            elif record.rates is not NO_RATES:
                record.rates = NO_RATES  # idle for this whole interval
        for session in self._ended:
            self._add_ended(session, pairs, sources if per_source else None)
        self._ended.clear()
        self._bytes_highest = max(self._bytes_highest, held_bytes)
        self._buffers_highest = max(self._buffers_highest, held_buffers)
        self.last = self._snapshot(pairs, sources, held_bytes, held_buffers)
        return self.last

    def session_rates(self, session_id: int) -> SessionRates:
        """The session's traffic per second over the last interval (``NO_RATES`` for one
        not collected yet)."""
        record = self._seen.get(session_id)
        return NO_RATES if record is None else record.rates

    @staticmethod
    def _add_traffic(
        record: _Seen,
        session: Session,
        stats: ConnectionStats,
        source: ConnectionStats | None,
        interval: float = 0.0,
    ) -> None:
        ingress, egress = session.ingress, session.egress
        values = (
            ingress.reads - record.in_reads,
            egress.reads - record.out_reads,
            ingress.frames - record.in_frames,
            egress.frames - record.out_frames,
            ingress.bytes - record.in_bytes,
            egress.bytes - record.out_bytes,
        )
        if interval > 0:
            # Per second as STAT's human rates are: the delta over the nominal interval.
            record.rates = SessionRates(
                values[4] / interval,
                values[5] / interval,
                values[2] / interval,
                values[3] / interval,
            )
        record.in_reads, record.out_reads = ingress.reads, egress.reads
        record.in_frames, record.out_frames = ingress.frames, egress.frames
        record.in_bytes, record.out_bytes = ingress.bytes, egress.bytes
        for target in (stats, source):
            if target is not None:
                target.packets_received += values[0]
                target.packets_sent += values[1]
                target.frames_received += values[2]
                target.frames_sent += values[3]
                target.bytes_received += values[4]
                target.bytes_sent += values[5]

    def _add_ended(
        self,
        session: Session,
        pairs: dict[_Key, ConnectionStats],
        sources: dict[str, ConnectionStats] | None,
    ) -> None:
        record = self._seen.pop(session.id, None)
        if record is None:  # started and ended within one interval
            record = _Seen(session)
        else:
            record.rekey(session)
        stats = pairs.get(record.key)
        if stats is None:
            stats = pairs[record.key] = ConnectionStats()
        source = None
        if sources is not None:
            source = sources.get(record.source)
            if source is None:
                source = sources[record.source] = ConnectionStats()
        self._add_traffic(record, session, stats, source)
        # LIMIT: a refused client, and one that set off an alarm-only limit, counted in
        # the interval it ended (as amqpprox's gauge counts them until its cleanup).
        budget = session.data_budget
        alarmed = session.alarmed or (budget is not None and budget.alarmed)
        stats.limited += session.limited
        stats.alarmed += alarmed
        if source is not None:
            source.limited += session.limited
            source.alarmed += alarmed
        reason = removal(session.ended)
        stats.count_removal(reason)
        # A denied session ends at once: counted in the interval it ended in.
        stats.auth_denied += session.auth_denied
        if source is not None:
            source.count_removal(reason)
            source.auth_denied += session.auth_denied

    def _snapshot(
        self,
        pairs: dict[_Key, ConnectionStats],
        sources: dict[str, ConnectionStats],
        held_bytes: int,
        held_buffers: int,
    ) -> StatsSnapshot:
        overall = ConnectionStats()
        vhosts: dict[str, ConnectionStats] = {}
        backends: dict[str, ConnectionStats] = {}
        by_pair: dict[tuple[str, str], ConnectionStats] = {}
        for (vhost, name, backend_key), stats in pairs.items():
            overall.add(stats)
            for axis, key in ((vhosts, vhost), (backends, backend_key)):
                _entry(axis, key).add(stats)
            _entry(by_pair, (vhost, name)).add(stats)
        for pair, stats in by_pair.items():
            totals = self.totals.get(pair)
            if totals is None:
                if len(self.totals) >= MAX_TOTALS:
                    pair = (OTHER_VHOST, pair[1])
                    totals = self.totals.get(pair)
                if totals is None:
                    totals = self.totals[pair] = Totals()
            totals.add(stats)
        return StatsSnapshot(
            overall,
            vhosts,
            backends,
            sources,
            self._process.sample(),
            BufferStats(held_bytes, self._bytes_highest, held_buffers, self._buffers_highest),
            interval=self.interval,
            pairs=by_pair,
        )


def _entry(axis: dict[_K, ConnectionStats], key: _K) -> ConnectionStats:
    stats = axis.get(key)
    if stats is None:
        stats = axis[key] = ConnectionStats()
    return stats
