"""Forwarding: two pumps move a session's bytes, reading only frame headers.

Once both handshakes are done, ``_forward`` runs two pumps, each given its
``Direction``: client→broker in the session's task, broker→client in one child task
(two tasks per session keeps idle sessions small). A pump reads what is there, has
``FrameScanner`` cut it at the last whole frame and writes those frames on; a
transport is written by exactly one task at a time, so whole frames never interleave.
The only frames decoded are channel 0's methods (``_on_channel_zero``): Close and
Close-Ok (the close handshake passing through), Blocked and Unblocked (supervision).

The pump loop is the hot path: per read it looks at three attributes (the pause, the
data budget, the trace), stamps the direction's last data and calls the scanner, and
nothing else; no await unless it must wait, a pause holds it or a budget is spent.
The first pump to stop says why (``End``) and the session goes on to closing.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from amqprouter.net import sockets
from amqprouter.net.engine import Engine, Link, Outcome
from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.protocol import Frame, FrameScanner, ProtocolError, constants, peer_closed
from amqprouter.routing.rate_window import DataBudget
from amqprouter.session.closing import End
from amqprouter.session.state import SessionState, State

if TYPE_CHECKING:
    from amqprouter.protocol.tune import TuneParams
    from amqprouter.session.trace import FrameObserver

#: How the engine's outcomes read as a session's ends (``LEFT`` is not an end).
_ENDS: Final = {
    Outcome.CLEAN: End.CLEAN,
    Outcome.CLIENT_GONE: End.CLIENT_GONE,
    Outcome.BROKER_GONE: End.BROKER_GONE,
    Outcome.CLIENT_ERROR: End.CLIENT_ERROR,
    Outcome.BROKER_ERROR: End.BROKER_ERROR,
}

#: After this many reads served without waiting, a pump yields to the scheduler so
#: that other sessions run and cancellation can reach it.
YIELD_EVERY: Final = 16


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


class Forwarding(SessionState):
    """Forwarding a session's frames both ways until one side ends."""

    __slots__ = ()

    if TYPE_CHECKING:
        # Of the other parts: the end (closing.py), supervision (watch.py), the pause
        # (session.py).
        async def _finish(self, end: End) -> None: ...
        def _watch_step(self) -> float: ...
        async def _hold(self, data: bytes) -> End | bytes: ...
        def _start_keeper(self) -> None: ...
        def watch_check(self, now: float) -> float | None: ...
        def watch_frames(self, observer: FrameObserver) -> bool: ...

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
        watchdog = self.context.watchdog

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
                if watchdog is not None:
                    self._watch_handle = watchdog.watch(self, now + self._watch_step())
                if self.vhost is not None and (traces := self.context.vhost_traces(self.vhost)):
                    for observer in traces:  # VHOST TRACE: before the first frame
                        self.watch_frames(observer)
                early = await self._deliver_early(client_early, broker_early)
                if early is not None:
                    outcome.append(early)
                elif (engine := self.context.engine) is not None and self._fits_engine(engine):
                    # The engine forwards until the session ends, or hands it back (a
                    # pause, a data-rate limit, the engine's stop) to the pumps below.
                    ended = await self._forward_in_engine(engine)
                    if ended is not None:
                        outcome.append(ended)
                if not outcome:
                    # Only now: a keeper task (pause) writes to the broker too, so it must
                    # not start while the early frames are being written.
                    self._forwarding_tasks = nursery
                    self._start_keeper()  # paused before forwarding began
                    nursery.start_soon(pump, self._downstream())
                    await pump(self._upstream())
        finally:
            self._forwarding = self._forwarding_tasks = None
            if watchdog is not None and self._watch_handle is not None:
                watchdog.forget(self._watch_handle)
                self._watch_handle = None
        end = outcome[0] if outcome else End.TIMEOUT
        if self._pending_end is not None and scope.cancelled_caught:
            end = self._pending_end
        self.ended = end
        self.state = State.CLOSING
        await self._finish(end)

    def _fits_engine(self, engine: Engine) -> bool:
        """Whether the engine may forward this session: plain TCP both ways (a TLS
        transport decrypts in its own buffers: the task path), nothing pacing or holding
        the client's data, nothing watching its frames (a trace reads them on the task
        path), and the real clock (the engine stamps ``time.monotonic``)."""
        return (
            engine.running
            and type(self.client) is PlainTransport
            and type(self.broker) is PlainTransport
            and self._pause is None
            and self.data_budget is None
            and self._trace is None
            and self._now is time.monotonic
        )

    async def _forward_in_engine(self, engine: Engine) -> End | None:
        """Forward through the engine: why the session ended, or None when the engine
        handed it back (what it owed each peer is written here first, then the pumps
        take over). Cancelling (a disconnect, the watchdog, a close deadline) evicts it;
        a peer the engine owed bytes stays in ``_writing``, so closing cuts it."""
        assert self.broker is not None
        client, broker = self.client.raw_socket(), self.broker.raw_socket()
        assert client is not None and broker is not None
        link = Link(
            self,
            (client, self.client, self.ingress),
            (broker, self.broker, self.egress),
            self._writing,
            self._on_channel_zero,
        )
        self._link = link
        try:
            result = await engine.forward(link)
        finally:
            self._link = None
        if result is Outcome.LEFT:
            for peer, owed in (
                (self.broker, link.owed_to_broker),
                (self.client, link.owed_to_client),
            ):
                if owed:
                    # Scanned in the engine, written here: whole frames, and what a trace
                    # that evicted the session must see first.
                    if self._trace is not None and not self._trace.saw(
                        self, peer is self.broker, [owed], self._now()
                    ):
                        self._trace = None
                    try:
                        await peer.send_all(owed)
                    except PeerGone:
                        return End.CLIENT_GONE if peer is self.client else End.BROKER_GONE
                    self._writing.discard(peer)
            return None
        if result in (Outcome.CLIENT_ERROR, Outcome.BROKER_ERROR):
            sender = "client" if result is Outcome.CLIENT_ERROR else "broker"
            self.log.warning("malformed frame", sender=sender, error=link.detail)
        return _ENDS[result]

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
            # asked; and the pump parks on the socket itself, not through the transport's
            # ``wait_readable``: an idle session has both pumps parked, and a coroutine
            # layer more per park would be memory per idle session.
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
                return End.CLEAN if self._close_ok_forwarded else way.sender_gone
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
            if self._close_ok_forwarded:
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
        methods: the pieces of ``data`` ready to forward (whole frames), shown to what
        watches the session (trace.py) when something does."""
        now = self._now()
        if way.from_client:
            self.last_ingress = now
        else:
            self.last_egress = now
        pieces, controls = way.scanner.scan(data)
        if controls is not None:
            self._on_channel_zero(controls, way.sender)
        if self._trace is not None and not self._trace.saw(self, way.from_client, pieces, now):
            self._trace = None  # every observer is done: back to one slot read
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
                self._close_ok_forwarded = True
            elif method_id == constants.CONNECTION_BLOCKED:
                self.log.info("broker blocked the connection")
                self._blocked = True
            elif method_id == constants.CONNECTION_UNBLOCKED:
                self.log.info("broker unblocked the connection")
                self._blocked = False
                self._watch_since = self._now()  # a write held by the block restarts
