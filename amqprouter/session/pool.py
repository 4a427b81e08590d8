"""Pooling mode: broker connections kept and shared by many short-lived clients.

Theory of operation
-------------------

A pooled client (``--pool``, or ``MAP POOL vhost ON``) gets the router's handshake as
every client does. Its broker side is a ``BrokerLink``: one broker connection that many
clients share, their channels remapped onto its own by a sans-IO ``Multiplexer``
(protocol/multiplexer.py). Links are kept per ``PoolKey``: backend, the vhost the
broker opens, the user, a hash of the exact credentials (and any the auth service put
in their place) and the client's frame_max (a broker sends frames as large as its
connection agreed; a client must never get one larger than its own).

* **Credentials are never trusted on their own.** A client whose key has no link with
  room goes through the real broker handshake (session/opening.py) with its own
  credentials; the link is made from that connection once the broker's Open-Ok has
  come. A wrong password gets the broker's own 403, because it never matches a key the
  broker accepted.
* **One task per link** reads the broker, cuts frames and dispatches them by channel
  (``Multiplexer.broker_frame``); a client's session writes its frames to the broker
  through the link (``from_client``). The broker is written under the link's
  ``WriteGate``, so whole frames never interleave. A client is written through its
  ``PooledClient.offer``, which never waits: what the kernel does not take at once
  waits in the client's own queue for a writer task, up to ``CLIENT_BUFFER`` bytes,
  past which that client alone is cut; so the link's reader never waits on a client
  that stopped reading. What one read of the broker brings a client is one write.
* **Heartbeats are per side.** The link heartbeats the broker (``POOL_HEARTBEAT``)
  and ends itself when the broker is silent for two intervals; each pooled session
  heartbeats its client and drops one that is silent for two of its intervals.
* **The link's end is every client's.** A broker Connection.Close reaches every client
  of the link with the broker's code and text; a broker socket that drops gives each a
  320 at once (the reader sees the end of stream); Connection.Blocked and Unblocked are
  copied to every client.
* **Limits**: a link with no client for ``idle_timeout`` seconds (amqproxy's 5 s) is
  closed; a link takes clients while it has fewer than ``max_channels`` broker channels
  allocated; a key has at most ``max_connections`` links (0: no limit). Clients of a key
  that is at its limit of links and handshakes wait for one that is under way instead
  of opening another.

Why trio tasks and not the forwarding engine's thread (net/engine.py): a pooled client
is short-lived, and what it costs is handshakes, not wake-ups per read. The multiplexer
does no I/O, so the engine can drive it later without change.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import Transport, recv_some
from amqprouter.protocol import (
    FrameReader,
    FrameScanner,
    ProtocolError,
    close_frame,
    constants,
    peer_closed,
)
from amqprouter.protocol.close import CLOSE_OK_FRAME
from amqprouter.protocol.methods import method_frame
from amqprouter.protocol.multiplexer import BROKER, Multiplexer
from amqprouter.protocol.tune import TuneParams

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from amqprouter.protocol import Frame
    from amqprouter.routing import Backend

log = structlog.get_logger("amqprouter.pool")

#: amqproxy's default: a broker connection no client used for this long is closed.
IDLE_TIMEOUT: Final = 5.0
#: The heartbeat a pooled broker connection asks for: it outlives its clients, so its
#: own liveness must not depend on what the first client asked.
POOL_HEARTBEAT: Final = 60
#: A heartbeat frame (type 8, channel 0, empty payload).
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
#: What may wait to be written to one pooled client (bytes): a client that stopped
#: reading is cut past this, alone; the link's reader never waits on it.
CLIENT_BUFFER: Final = 1 << 20
#: How long a link waits for the broker's Close-Ok when it closes (idle, shutdown).
CLOSE_WAIT: Final = 1.0


@attrs.frozen
class PoolLimits:
    #: Seconds a link with no client stays open (0 closes it as the last client leaves).
    idle_timeout: float = IDLE_TIMEOUT
    #: Broker channels a link may allocate (0: the broker's channel_max).
    max_channels: int = 0
    #: Links per key (0: no limit).
    max_connections: int = 0


#: The Open-Ok of a client whose link was already open (the first client of a link gets
#: the broker's own): its reserved short string, empty.
OPEN_OK_FRAME: Final = method_frame(constants.CONNECTION_OPEN_OK, b"\x00")


class Turn(enum.Enum):
    """``Pool.wait_turn``'s answer when no link has room."""

    OPEN = "open a link"
    FULL = "the key has its most links, all full"


@attrs.frozen
class PoolKey:
    backend: str
    vhost: str
    user: str
    #: sha256 of the mechanism and credentials the broker was given (never the secret).
    credentials: str
    frame_max: int


def pool_key(
    backend: str, vhost: str, mechanism: str, credentials: bytes, frame_max: int
) -> PoolKey:
    """The key of a client: its PLAIN user is read out for CONN and STAT."""
    user = ""
    if mechanism == "PLAIN":
        parts = credentials.split(b"\x00")
        if len(parts) == 3:
            user = parts[1].decode(errors="replace")
    digest = hashlib.sha256(mechanism.encode() + b"\x00" + credentials).hexdigest()
    return PoolKey(backend, vhost, user, digest, frame_max)


class PoolEnded(Exception):
    """The link a pooled client used ended: the Close the client gets."""

    def __init__(self, reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0):
        super().__init__(reply_code, reply_text)
        self.reply_code, self.reply_text = reply_code, reply_text
        self.class_id, self.method_id = class_id, method_id


class WriteGate:
    """Several tasks writing whole frames to one transport, one write at a time.

    ``async with gate:`` costs no checkpoint when nobody else holds it: a trio.Lock's
    acquire yields to the scheduler every time, and every frame a client sends the
    broker takes its link's gate, so a busy router would add a trip through the run
    queue to each. (Clients are written through ``PooledClient.offer``, never a gate.)
    A holder cancelled mid-write leaves the stream inside a frame; the owner then cuts
    that peer, as the sessions' pumps do.
    """

    __slots__ = ("_busy", "_free")

    def __init__(self) -> None:
        self._busy = False
        self._free: trio.Event | None = None

    async def __aenter__(self) -> None:
        while self._busy:
            if self._free is None:
                self._free = trio.Event()
            await self._free.wait()
        self._busy = True

    async def __aexit__(self, *exc: object) -> None:
        self._busy = False
        if self._free is not None:
            self._free.set()
            self._free = None


class PooledClient:
    """One client of a link, as the link (and its own session) writes to it.

    Writes never wait: ``offer`` sends at once what the kernel takes (one system call,
    the common case) and queues the rest for a writer task, so the link's one reader
    never waits on a client that stopped reading. What waits is bounded by ``limit``
    bytes: past it the client is cut alone (``stuck``), the others of its link go on.
    Every write to the client goes through ``offer``, in order, until its session ends.
    """

    __slots__ = (
        "_drained",
        "_gone",
        "_head_partial",
        "_outbox",
        "_sock",
        "_torn",
        "_writing",
        "counter",
        "ended",
        "id",
        "limit",
        "queued",
        "scope",
        "spawn",
        "stuck",
        "transport",
    )

    def __init__(
        self,
        client_id: int,
        transport: Transport,
        scope: trio.CancelScope,
        counter: FrameScanner | None = None,
        limit: int = CLIENT_BUFFER,
    ) -> None:
        self.id = client_id
        self.transport = transport
        #: The socket itself when writes may go straight to it (plain TCP).
        self._sock = transport.raw_socket()
        #: The session's broker→client counters (CONN, STAT): bytes, frames, writes.
        self.counter = counter
        #: Cancelled when the link ends (``ended`` says with what), when the client is
        #: cut (``stuck``) or found gone.
        self.scope = scope
        self.ended: PoolEnded | None = None
        self.limit = limit
        #: Bytes offered and not yet written (queued, or being written by the writer).
        self.queued = 0
        self._outbox: list[bytes | bytearray] = []
        #: The first queued piece was partly sent: the stream stands inside a frame.
        self._head_partial = False
        self._writing = False  # the writer task is in a write (perhaps inside a frame)
        self._torn = False  # cut inside a frame
        self._drained: trio.Event | None = None
        self._gone = False
        #: Cut for having more than ``limit`` bytes waiting.
        self.stuck = False
        #: Where the writer task runs (the pool's nursery, set by ``BrokerLink.attach``).
        self.spawn: Callable[[Callable[[], Awaitable[None]]], object] | None = None

    @property
    def mid_frame(self) -> bool:
        """Whether what the client got so far may end inside a frame (nothing more, no
        Close, may be written then)."""
        return self._torn or self._writing or self._head_partial

    def offer(self, data: bytes | bytearray, frames: int = 1) -> None:
        """Write ``data`` (whole frames) after everything offered before; never waits."""
        if self._gone or self.stuck:
            return
        counter = self.counter
        if counter is not None:
            counter.bytes += len(data)
            counter.frames += frames
            counter.reads += 1
        if not self.queued and self._sock is not None:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost()
                return
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
                self._head_partial = True
        self._outbox.append(data)
        self.queued += len(data)
        if self.queued > self.limit:
            self._cut()
            return
        if not self._writing and self.spawn is not None:
            self._writing = True
            self.spawn(self._write_out)

    async def _write_out(self) -> None:
        """The writer: what ``offer`` queued, in batches, until none is left."""
        try:
            while self._outbox and not self._gone:
                outbox, self._outbox = self._outbox, []
                batch = outbox[0] if len(outbox) == 1 else b"".join(outbox)
                try:
                    await self.transport.send_all(batch)
                except (PeerGone, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    self._lost()
                    return
                except Exception:
                    # It runs in the pool's nursery: nothing may escape to end the links.
                    log.exception("pooled client writer failed", client=self.id)
                    self._lost()
                    return
                self._head_partial = False
                self.queued -= len(batch)
        finally:
            self._writing = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    async def drained(self) -> bool:
        """Wait until everything offered is written; False if it never will be (the
        client was cut or went). The caller bounds the wait."""
        while self.queued and not (self._gone or self.stuck):
            if not self._writing and self.spawn is not None:  # no writer to wait for
                self._writing = True
                self.spawn(self._write_out)
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        return not (self._gone or self.stuck)

    def _cut(self) -> None:
        """Too much waits for a client that stopped reading: it is ended, alone. At a
        frame boundary its session closes it with a 320; inside a frame the socket is
        cut (a Close there would be garbage to the client)."""
        self.stuck = True
        self._outbox = []
        if self.mid_frame:
            self._torn = True
            self.transport.close()
        self.scope.cancel()

    def _lost(self) -> None:
        """A write found the client gone: its session sees the scope cancelled and
        detaches it."""
        self._gone = True
        self._outbox = []
        self.scope.cancel()


_link_ids = itertools.count(1)


class BrokerLink:
    """One broker connection of the pool and the clients sharing it."""

    def __init__(
        self,
        key: PoolKey,
        backend: Backend,
        transport: Transport,
        tune: TuneParams,
        *,
        pending: bytes,
        limits: PoolLimits,
        clock: Callable[[], float],
        spawn: Callable[[Callable[[], Awaitable[None]]], object] | None = None,
    ) -> None:
        """``tune``: what the broker connection agreed; ``pending``: what the broker sent
        after its Open-Ok; ``spawn``: where clients' writer tasks run (the pool's)."""
        self.id = next(_link_ids)
        self.key, self.backend, self.transport = key, backend, transport
        self.limits = limits
        self._clock = clock
        #: Channels a link may allocate: the broker's limit, or the pool's if lower.
        usable = tune.channel_max or 65535
        if limits.max_channels:
            usable = min(usable, limits.max_channels)
        self.mux: Multiplexer[int] = Multiplexer(usable)
        self.heartbeat = tune.heartbeat
        self.clients: dict[int, PooledClient] = {}
        self._reader = FrameReader(tune.frame_max)
        self._reader.feed(pending)
        self._write_lock = WriteGate()
        self._spawn = spawn
        #: What one read of the broker came to, per client: written at once after it
        #: (one write per client per read).
        self._batch: dict[int, list[bytes]] = {}
        self._scope = trio.CancelScope()
        self._emptied = trio.Event()
        self.closed = False
        self._close_sent = False
        self.blocked: bytes | None = None  # the broker's Blocked frame while blocked
        self.opened_at = clock()
        self.last_read = clock()
        #: Clients served over the link's life (statistics).
        self.clients_served = 0
        self.broker_address = transport.peer_name()
        self.broker_local = transport.local_name()
        self.log = log.bind(link=self.id, backend=backend.name, vhost=key.vhost, user=key.user)

    # -- what the pool and sessions call -------------------------------------------

    @property
    def has_room(self) -> bool:
        mux = self.mux
        return not self.closed and (
            mux.idle > 0 or mux.channels.allocated < mux.channels.channel_max
        )

    def attach(self, client: PooledClient) -> None:
        if client.spawn is None:
            client.spawn = self._spawn
        self.clients[client.id] = client
        self.clients_served += 1
        self._emptied = trio.Event()

    def forget(self, client_id: int) -> None:
        """Drop a client that never got as far as its first frame (a disconnect or a
        deadline between joining and serving): it has no channel to close. A no-op for
        a client already detached."""
        if self.clients.pop(client_id, None) is None:
            return
        if self.mux.detach(client_id):
            # Channels it had are left to the broker until the link closes (never seen:
            # a client with channels goes through ``detach``); never raise from here.
            self.log.warning("pooled client forgotten with channels open", client=client_id)
        if not self.clients:
            self._emptied.set()

    async def detach(self, client_id: int) -> None:
        """The client is gone: its channels kept or closed on the broker (multiplexer)."""
        if self.clients.pop(client_id, None) is None:
            return
        if not self.closed:
            sends = self.mux.detach(client_id)
            # A broker gone meanwhile: the reader sees it and ends the link.
            with contextlib.suppress(PeerGone, OSError, PoolEnded):
                await self._send_broker([data for _target, data in sends])
        if not self.clients:
            self._emptied.set()

    async def from_client(
        self, client_id: int, sends: Sequence[tuple[int | None, bytes | bytearray]]
    ) -> None:
        """Send what a client's frames came to (``ClientStream.receive``, channel 0
        aside): to the broker, or the router's own answers back to the client, in order.

        Raises ``PoolEnded`` once the link is gone.
        """
        if not sends:
            return
        client = self.clients.get(client_id)
        if client is None:  # the link ended (and told it so) since the client last read
            raise PoolEnded(constants.CONNECTION_FORCED, "CONNECTION_FORCED - broker gone")
        to_broker: list[bytes | bytearray] = []
        answers: list[bytes | bytearray] = []
        for target, data in sends:
            if target is BROKER:
                if answers:
                    client.offer(b"".join(answers), len(answers))
                    answers = []
                to_broker.append(data)
            else:
                # The router's own answers (a kept channel's Open-Ok, Close-Ok):
                # everything before them goes to the broker first, in order; answers
                # in a row go in one write.
                await self._send_broker(to_broker)
                to_broker = []
                answers.append(data)
        await self._send_broker(to_broker)
        if answers:
            client.offer(answers[0] if len(answers) == 1 else b"".join(answers), len(answers))

    # -- the link's task -----------------------------------------------------------

    async def run(self, drop: Callable[[BrokerLink], None]) -> None:
        """Read the broker and dispatch until the link ends; then end every client."""
        ended = PoolEnded(constants.CONNECTION_FORCED, "CONNECTION_FORCED - pool shut down")
        broker_done = False  # the broker closed, went or was closed: nothing more to say
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    if self.heartbeat:
                        nursery.start_soon(self._heartbeats)
                    nursery.start_soon(self._idle_watch)
                    ended = await self._read_broker()
                    broker_done = True
                    nursery.cancel_scope.cancel()
        except Exception:
            self.log.exception("pooled broker connection failed")
            ended = PoolEnded(
                constants.INTERNAL_ERROR, "INTERNAL_ERROR - pooled broker connection failed"
            )
        finally:
            if not broker_done and not self._close_sent:
                # The router is shutting down (or the link failed): the broker is told,
                # so it logs a close rather than a dropped connection.
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
                    await self._close_broker(constants.REPLY_SUCCESS, "amqprouter shutting down")
                    await self._await_close_ok()
            self.closed = True
            drop(self)
            if self._batch:  # what came before the end, first
                self._write_batch()
            for client in list(self.clients.values()):
                client.ended = ended
                client.scope.cancel()
            self.clients.clear()
            self.transport.close()
            self.log.info(
                "pooled broker connection closed",
                reply_code=ended.reply_code,
                reply_text=ended.reply_text,
                clients_served=self.clients_served,
            )

    async def _read_broker(self) -> PoolEnded:
        reader = self._reader
        while True:
            frame = None
            try:
                frame = reader.next_frame()
                if frame is None:
                    if self._batch:
                        self._write_batch()
                    data = await recv_some(self.transport)
                    self.last_read = self._clock()
                    reader.feed(data)
                    continue
            except ProtocolError as exc:
                self.log.error("broker sent a malformed frame", error=str(exc))
                await self._close_broker(exc.reply_code, exc.reply_text)
                return PoolEnded(constants.CONNECTION_FORCED, f"CONNECTION_FORCED - {exc}")
            except (PeerGone, OSError):
                self.log.warning("pooled broker connection lost")
                return PoolEnded(
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - broker {self.backend.label} closed the connection",
                )
            if frame.channel:
                await self._dispatch(self.mux.broker_frame(frame))
                continue
            ended = await self._channel_zero(frame)
            if ended is not None:
                return ended

    async def _channel_zero(self, frame: Frame) -> PoolEnded | None:
        method = frame.method_id
        if method == constants.CONNECTION_CLOSE:
            closed = peer_closed(frame)
            self.log.warning(
                "broker closed pooled connection",
                reply_code=closed.reply_code,
                reply_text=closed.reply_text,
            )
            self._write_batch()
            with contextlib.suppress(PeerGone, OSError):
                await self._send_broker([CLOSE_OK_FRAME])
            return PoolEnded(
                closed.reply_code, closed.reply_text, closed.class_id, closed.method_id
            )
        if method == constants.CONNECTION_CLOSE_OK:
            return PoolEnded(constants.CONNECTION_FORCED, "CONNECTION_FORCED - pool closed")
        if method in (constants.CONNECTION_BLOCKED, constants.CONNECTION_UNBLOCKED):
            self.blocked = frame.raw if method == constants.CONNECTION_BLOCKED else None
            for client in self.clients.values():
                self._batch.setdefault(client.id, []).append(frame.raw)
        return None  # heartbeats (their arrival is what counts), anything else

    async def _dispatch(self, sends: list[tuple[int | None, bytes]]) -> None:
        to_broker: list[bytes] = []
        batch = self._batch
        for target, data in sends:
            if target is BROKER:
                to_broker.append(data)
            elif target in batch:
                batch[target].append(data)
            else:
                batch[target] = [data]
        if to_broker:
            # The write may wait: what the clients are owed goes first, so a router's
            # own answer (a session's) never overtakes a broker frame before it.
            self._write_batch()
            await self._send_broker(to_broker)

    def _write_batch(self) -> None:
        """Write what the last read of the broker came to, one write per client (a
        client gone since is skipped). Never waits: a client that stopped reading is
        cut by its own bound (``PooledClient.offer``)."""
        batch, self._batch = self._batch, {}
        clients = self.clients
        for client_id, frames in batch.items():
            client = clients.get(client_id)
            if client is not None:
                client.offer(frames[0] if len(frames) == 1 else b"".join(frames), len(frames))

    async def _send_broker(self, frames: Sequence[bytes | bytearray]) -> None:
        if not frames:
            return
        if self.closed:
            raise PoolEnded(constants.CONNECTION_FORCED, "CONNECTION_FORCED - broker gone")
        async with self._write_lock:
            try:
                await self.transport.send_all(frames[0] if len(frames) == 1 else b"".join(frames))
            except (PeerGone, OSError) as exc:
                # The reader sees the end of stream too, and ends every client; the
                # client whose write found it first is told the same.
                raise PoolEnded(
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - broker {self.backend.label} closed the connection",
                ) from exc

    async def _heartbeats(self) -> None:
        """Heartbeat the broker; end the link when the broker is silent for two intervals."""
        interval = self.heartbeat
        while True:
            await trio.sleep(interval / 2)
            if self._clock() - self.last_read > 2 * interval:
                self.log.warning("pooled broker connection silent; closing", heartbeat=interval)
                self._scope.cancel()
                return
            try:
                await self._send_broker([HEARTBEAT_FRAME])
            except PoolEnded:
                return

    async def _idle_watch(self) -> None:
        """Close the link when it has had no client for ``idle_timeout`` seconds."""
        while True:
            if self.clients:
                await self._emptied.wait()
            await trio.sleep(self.limits.idle_timeout)
            if not self.clients:
                self.log.info("pooled broker connection idle; closing")
                self.closed = True  # no new client from now on
                with trio.move_on_after(CLOSE_WAIT):
                    await self._close_broker(constants.REPLY_SUCCESS, "idle pooled connection")
                    while True:  # the reader returns at the Close-Ok
                        await trio.sleep_forever()
                self._scope.cancel()
                return

    async def _await_close_ok(self) -> None:
        """Read (and drop) what the broker sends until its Close-Ok or its end."""
        reader = self._reader
        try:
            while True:
                frame = reader.next_frame()
                if frame is None:
                    reader.feed(await recv_some(self.transport))
                elif frame.method_id == constants.CONNECTION_CLOSE_OK:
                    return
        except (PeerGone, OSError, ProtocolError):
            return

    async def _close_broker(self, code: int, text: str) -> None:
        self._close_sent = True
        try:
            async with self._write_lock:
                await self.transport.send_all(close_frame(code, text))
        except (PeerGone, OSError):
            pass

    def cancel(self) -> None:
        self._scope.cancel()


@attrs.frozen
class PoolFigures:
    """Pooling mode, as STAT and /metrics show it. Now: broker connections, clients on
    them, broker channels allocated and those of them kept open for reuse. Since start:
    broker connections opened, clients served, Channel.Opens answered with a kept channel."""

    links: int
    clients: int
    channels: int
    idle_channels: int
    links_opened: int
    clients_served: int
    channels_reused: int


class Pool:
    """Every link of one server, by key, and the nursery their tasks run in."""

    def __init__(
        self, limits: PoolLimits | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.limits = limits or PoolLimits()
        self._clock = clock or trio.current_time
        self.links: dict[PoolKey, list[BrokerLink]] = {}
        # Handshakes under way per key, and the event set when one of them ends.
        self._pending: dict[PoolKey, int] = {}
        self._settled: dict[PoolKey, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.links_opened = 0
        self._clients_done = 0
        self._reused_done = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def find(self, key: PoolKey) -> BrokerLink | None:
        """A link of ``key`` with room for a client (the busiest such, to pack clients)."""
        best = None
        for link in self.links.get(key, ()):
            if link.has_room and (best is None or len(link.clients) > len(best.clients)):
                best = link
        return best

    async def wait_turn(self, key: PoolKey) -> BrokerLink | Turn:
        """A link of ``key`` with room; else ``OPEN`` (the caller opens one, counted as
        under way until it calls ``settled``) or ``FULL`` (the key is at its limit of
        links, each full).

        While a handshake of the key is under way, wait for it rather than open
        another: it is likely to have room, and packing clients is the point.
        """
        limit = self.limits.max_connections
        while True:
            link = self.find(key)
            if link is not None:
                return link
            if self._pending.get(key, 0):
                await self._settled.setdefault(key, trio.Event()).wait()
                continue
            if limit and len(self.links.get(key, ())) >= limit:
                return Turn.FULL
            self._pending[key] = 1
            return Turn.OPEN

    def settled(self, key: PoolKey) -> None:
        """That handshake ended (a link was added, or it failed)."""
        left = self._pending.get(key, 0) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)
        event = self._settled.pop(key, None)
        if event is not None:
            event.set()

    def add(
        self, key: PoolKey, backend: Backend, transport: Transport, tune: TuneParams, pending: bytes
    ) -> BrokerLink:
        """Make a link of a broker connection just opened (``BrokerLink``'s arguments),
        and start its task."""
        assert self._nursery is not None, "Pool.run() must be started first"
        link = BrokerLink(
            key,
            backend,
            transport,
            tune,
            pending=pending,
            limits=self.limits,
            clock=self._clock,
            spawn=self._nursery.start_soon,
        )
        self.links.setdefault(key, []).append(link)
        self.links_opened += 1
        self._nursery.start_soon(link.run, self._drop)
        return link

    def _drop(self, link: BrokerLink) -> None:
        links = self.links.get(link.key, [])
        if link in links:
            links.remove(link)
            self._clients_done += link.clients_served
            self._reused_done += link.mux.reused
        if not links:
            self.links.pop(link.key, None)

    def close_backend(self, name: str) -> int:
        """End every link to backend ``name`` (its clients get a 320); how many."""
        closing = [link for links in self.links.values() for link in links]
        closing = [link for link in closing if link.backend.name == name]
        for link in closing:
            link.cancel()
        return len(closing)

    def all_links(self) -> list[BrokerLink]:
        return [link for links in self.links.values() for link in links]

    def stats(self) -> PoolFigures:
        links = self.all_links()
        return PoolFigures(
            links=len(links),
            clients=sum(len(link.clients) for link in links),
            channels=sum(link.mux.channels.allocated for link in links),
            idle_channels=sum(link.mux.idle for link in links),
            links_opened=self.links_opened,
            clients_served=self._clients_done + sum(link.clients_served for link in links),
            channels_reused=self._reused_done + sum(link.mux.reused for link in links),
        )
