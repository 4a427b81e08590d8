"""A pooled session: the client's side of pooling mode (the broker side is pool.py).

Opening is the ordinary one up to routing and auth (opening.py); then, instead of a
broker connection of its own, the session takes a place on a ``BrokerLink``:

* ``_open_pooled``: a link of the client's ``PoolKey`` with room is taken at once
  (the client gets an Open-Ok from the router); else the session opens one through
  the real broker handshake with the client's credentials (so a wrong password gets
  the broker's own 403), with the pool's tune (``POOL_HEARTBEAT``, the router's
  channel_max), and hands the connection to the pool once the broker's Open-Ok came.
* ``_serve_pooled``: one task reads the client, cuts frames and hands them to the link
  (channel 0 is the router's: heartbeats, Close); a second heartbeats the client. Every
  write to the client (the link's, the session's own answers) goes through
  ``PooledClient.offer``, in order, and never waits (pool.py); at the end the session
  waits, bounded, for what is still queued before its Close.

The session ends on the client's Close (answered by the router), on the client's
socket going or falling silent for two heartbeat intervals, on a disconnect, or when
the link ends (``PoolEnded``: the broker's Close with its code and text, or a 320).
In every case the client is detached from the link first (its channels kept or closed
on the broker), then told what it is owed.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, cast

import trio

from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import recv_some
from amqprouter.protocol import (
    CLOSE_OK_FRAME,
    BrokerOpened,
    ClientOpened,
    Frame,
    ProtocolError,
    constants,
    peer_closed,
    properties,
)
from amqprouter.protocol.multiplexer import CHANNEL_ZERO, ClientError, ClientStream
from amqprouter.protocol.tune import TuneParams
from amqprouter.session.closing import End
from amqprouter.session.pool import (
    HEARTBEAT_FRAME,
    OPEN_OK_FRAME,
    POOL_HEARTBEAT,
    BrokerLink,
    PooledClient,
    PoolEnded,
    Turn,
    pool_key,
)
from amqprouter.session.state import SessionState, State

if TYPE_CHECKING:
    from collections.abc import Sequence

    from amqprouter.routing import Backend, Route
    from amqprouter.session.auth import Allow
    from amqprouter.session.pool import Pool, PoolKey
    from amqprouter.session.session import Session  # what every Pooling is


class Pooling(SessionState):
    """Opening onto and serving over a shared broker connection."""

    __slots__ = ()

    if TYPE_CHECKING:
        # Of the other parts: opening.py, closing.py.
        async def _connect_and_replay(
            self,
            opened: ClientOpened,
            candidates: Sequence[Backend],
            allowed: Allow,
            tune: TuneParams | None = None,
        ) -> BrokerOpened | None: ...
        async def _close_client(
            self,
            code: int,
            text: str,
            class_id: int = 0,
            method_id: int = 0,
            *,
            answer_within: float | None = None,
        ) -> None: ...

    def _key_of(
        self, opened: ClientOpened, backend: Backend, route: Route, allowed: Allow
    ) -> PoolKey:
        mechanism, credentials = properties.start_ok_sasl(opened.start_ok.raw)
        if allowed.sasl is not None:
            # The broker is given the auth service's credentials: they are what it
            # accepts; the client's own were what the auth service accepted.
            mechanism = allowed.sasl[0]
            credentials = allowed.sasl[1] + b"\x00auth\x00" + credentials
        vhost = opened.vhost if route.broker_vhost is None else route.broker_vhost
        return pool_key(backend.name, vhost, mechanism, credentials, opened.tune.frame_max)

    async def _open_pooled(
        self, pool: Pool, opened: ClientOpened, route: Route, allowed: Allow
    ) -> BrokerOpened | None:
        """Take a link's place (``_pooled``), or open a link; the Open-Ok the client gets."""
        candidates = route.candidates
        began = time.monotonic()
        for backend in candidates:
            link = pool.find(self._key_of(opened, backend, route, allowed))
            if link is not None:
                return self._joined(link, began)
        first = self._key_of(opened, candidates[0], route, allowed)
        turn = await pool.wait_turn(first)
        if isinstance(turn, BrokerLink):
            return self._joined(turn, began)
        if turn is Turn.FULL:
            self.log.warning("pool full", max_connections=pool.limits.max_connections)
            await self._close_client(
                constants.RESOURCE_ERROR,
                f"RESOURCE_ERROR - the pool for vhost {opened.vhost} is full "
                f"({pool.limits.max_connections} broker connections)",
            )
            return None
        # This session opens the link: the broker sees this client's handshake.
        try:
            tune = TuneParams.from_wire(
                self.settings.tune.channel_max, opened.tune.frame_max, POOL_HEARTBEAT
            )
            open_ok = await self._connect_and_replay(opened, candidates, allowed, tune)
            if open_ok is None or self.broker is None or self.backend is None:
                return None
            key = self._key_of(opened, self.backend, route, allowed)
            link = pool.add(key, self.backend, self.broker, tune, open_ok.pending)
        finally:
            pool.settled(first)
        self.broker = None  # the link's now, not this session's to close
        self._join(link)
        self.log.info("pooled broker connection opened", link=link.id)
        return BrokerOpened(open_ok=open_ok.open_ok, pending=b"")

    def _joined(self, link: BrokerLink, began: float) -> BrokerOpened:
        """Joined a link already open: counted as a session opened, as a broker's Open-Ok
        is (its connect time: the wait for a place)."""
        open_ok = self._join(link)
        self.context.events.broker_opened(cast("Session", self), time.monotonic() - began)
        return open_ok

    def _join(self, link: BrokerLink) -> BrokerOpened:
        self._pooled = PooledClient(self.id, self.client, trio.CancelScope(), self.egress)
        link.attach(self._pooled)
        self._link_of_pool = link
        self.backend = link.backend
        if self.route is not None:
            self.route.landed(link.backend)
        self.broker_address, self.broker_local = link.broker_address, link.broker_local
        self.log = self.log.bind(backend=link.backend.name, link=link.id)
        return BrokerOpened(open_ok=OPEN_OK_FRAME, pending=b"")

    async def _serve_pooled(self, tune: TuneParams, client_early: bytes, open_ok: bytes) -> None:
        """Serve the client over its link until either ends; then detach and close."""
        link, client = self._link_of_pool, self._pooled
        assert link is not None and client is not None
        self._heartbeat = tune.heartbeat
        self.state = State.OPEN
        self.log.info("session open", pooled=True, broker=endpoint(self.broker_address))
        end = End.CLEAN
        reply: tuple[int, str, int, int] | None = None
        stream = ClientStream(link.mux, self.id, tune.frame_max)
        scope = client.scope
        self._forwarding = scope
        try:
            with scope:
                # Joined while the broker blocks publishers: told at once, as the others were.
                blocked = link.blocked
                client.offer(open_ok if blocked is None else open_ok + blocked, 1 + bool(blocked))
                async with trio.open_nursery() as nursery:
                    if tune.heartbeat:
                        nursery.start_soon(self._heartbeat_client, client, tune.heartbeat)
                    end, reply = await self._pooled_ingress(
                        link, client, stream, client_early, tune.heartbeat
                    )
                    if client.queued:  # the Close-Ok, say, behind what the client reads slowly
                        with trio.move_on_after(self.settings.timeouts.close):
                            await client.drained()
                    nursery.cancel_scope.cancel()
        except PeerGone:
            end = End.CLIENT_GONE
        finally:
            self._forwarding = None
            deadline = trio.current_time() + self.settings.timeouts.close
            with trio.CancelScope(shield=True, deadline=deadline):
                await link.detach(self.id)
        if scope.cancelled_caught:
            if (
                client.ended is None
                and self._pending_end is None
                and trio.current_time() >= scope.deadline
            ):
                silent = 2.0 * tune.heartbeat
                self.end_reason = f"client sent nothing for {silent:g}s"
                end = End.CLIENT_SILENT
                reply = (
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - {self.end_reason}",
                    0,
                    0,
                )
            elif client.stuck:
                end = End.CLIENT_STUCK
                self.end_reason = f"client stopped reading ({client.limit} bytes waiting)"
                # Cut already inside a frame, where a Close would be garbage; else told.
                text = f"CONNECTION_FORCED - {self.end_reason}"
                reply = None if client.mid_frame else (constants.CONNECTION_FORCED, text, 0, 0)
            elif client.ended is not None:
                ended = client.ended
                end = End.BROKER_GONE
                reply = (ended.reply_code, ended.reply_text, ended.class_id, ended.method_id)
            elif self._pending_end is not None:
                end = self._pending_end
                reply = (
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - {self.end_reason}",
                    0,
                    0,
                )
            else:
                end = End.CLIENT_GONE  # a write to it failed: the link cancelled it
        self.ended = end
        self.state = State.CLOSING
        if reply is None:
            self.log.info("session closed", pooled=True, reason=end.value)
            return
        self.log.info(
            "session ending",
            pooled=True,
            reason=end.value,
            reply_code=reply[0],
            reply_text=reply[1],
        )
        # Detached: the link writes to it no more; what it was offered goes first.
        if client.queued:
            with trio.move_on_after(self.settings.timeouts.close):
                await client.drained()
        if client.mid_frame:
            self.client.close()  # a Close would land inside a frame
            return
        await self._close_client(*reply)

    async def _pooled_ingress(
        self,
        link: BrokerLink,
        client: PooledClient,
        stream: ClientStream[int],
        early: bytes,
        heartbeat: int,
    ) -> tuple[End, tuple[int, str, int, int] | None]:
        """Read the client until it closes, goes or errs: the end, and the Close it is owed."""
        silent_after = 2.0 * heartbeat if heartbeat else math.inf
        data = early  # what the client pipelined after its Open
        while True:
            try:
                frames_before = stream.frames
                sends: list[tuple[int | None, bytes | bytearray]] = []
                for target, item in stream.receive(data):
                    if target is CHANNEL_ZERO:
                        assert isinstance(item, Frame)
                        await link.from_client(self.id, sends)
                        sends = []
                        done = await self._client_channel_zero(client, item)
                        if done is not None:
                            return done
                    else:
                        assert not isinstance(item, Frame)
                        sends.append((target, item))
                await link.from_client(self.id, sends)
                self.ingress.frames += stream.frames - frames_before
            except PeerGone:  # a write of the router's own answer found it gone
                return End.CLIENT_GONE, None
            except ClientError as exc:
                self.log.info("pooled client error", error=exc.reply_text)
                return End.CLIENT_ERROR, (exc.reply_code, exc.reply_text, 0, 0)
            except ProtocolError as exc:
                self.log.warning("client sent a malformed frame", error=str(exc))
                return End.CLIENT_ERROR, (exc.reply_code, exc.reply_text, 0, 0)
            except PoolEnded as ended:
                if client.ended is None:  # the link's own words win
                    client.ended = ended
                client.scope.cancel()
                await trio.lowlevel.checkpoint()
                raise AssertionError("unreachable: the scope is cancelled") from None
            # A client silent for two heartbeat intervals is gone: the session's scope
            # carries that deadline (moved on at each read; no scope per read), and
            # _serve_pooled tells its expiry from the other reasons to cancel it.
            if silent_after != math.inf:
                client.scope.deadline = trio.current_time() + silent_after
            try:
                data = await recv_some(self.client)
            except PeerGone:
                return End.CLIENT_GONE, None
            self.last_ingress = self._now()
            ingress = self.ingress
            ingress.bytes += len(data)
            ingress.reads += 1

    async def _client_channel_zero(
        self, client: PooledClient, frame: Frame
    ) -> tuple[End, tuple[int, str, int, int] | None] | None:
        method = frame.method_id
        if method == constants.CONNECTION_CLOSE:
            closed = peer_closed(frame)
            self._closed_by = ("client", closed.reply_code, closed.reply_text)
            client.offer(CLOSE_OK_FRAME)
            return End.CLEAN, None
        if method == constants.CONNECTION_CLOSE_OK:
            return End.CLEAN, None
        return None  # heartbeats: their arrival is what counts

    async def _heartbeat_client(self, client: PooledClient, heartbeat: int) -> None:
        """Heartbeat the client; a socket gone is the ingress task's to notice."""
        while True:
            await trio.sleep(heartbeat / 2)
            client.offer(HEARTBEAT_FRAME)
            self.last_egress = self._now()
