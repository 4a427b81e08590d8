"""Forwarding: a session's bytes move whole frames at a time, reading only headers.

Once both handshakes are done, ``_forward`` moves the session's bytes in one of two
ways, and may switch between them several times in its life:

* **the forwarding engine** (net/engine.py, the default data plane): a session over
  plain TCP or TLS hands its two sockets and scanners to the server's engine thread
  and awaits an ``Outcome``; its task parks there, with no child task and no nursery.
* **the pumps**, each given its ``Direction``: client→broker in the session's task,
  broker→client in one child task, in a nursery opened for that stretch
  (``_forward_on_tasks``). A PROXY-protocol or in-memory transport uses them for
  life; a paused session (its client's data held, the broker heartbeated), one paced
  by a data-rate limit and one whose frames a trace watches (trace.py) use them while
  that lasts. When it ends (an unpause, a limit lifted, the last trace done),
  ``_request_engine`` sets ``_back``: each pump stops at its next park, where it holds
  nothing (every byte it read is written, a partial frame stays in the scanner), the
  nursery ends once the keeper has too, and the session goes back into the engine with
  the same scanners, so no byte is lost or reordered across the switch.

A pump reads what is there, has ``FrameScanner`` cut it at the last whole frame and
writes those frames on; a transport is written by exactly one task at a time, so whole
frames never interleave. The only frames decoded are channel 0's methods
(``_on_channel_zero``): Close and Close-Ok (the close handshake passing through),
Blocked and Unblocked (supervision).

The pump loop is the hot path of the task path: per read it looks at three attributes
(the pause, the data budget, the trace), stamps the direction's last data and calls
the scanner, and nothing else; no await unless it must wait, a pause holds it or a
budget is spent. The first direction to stop says why (``End``) and the session goes
on to closing.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from amqprouter.net import sockets
from amqprouter.net.engine import Engine, Link, Outcome
from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.tls_transport import TLSTransport
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


def _engine_socket(transport: Transport) -> socket.socket | None:
    """The socket the forwarding engine reads and writes for ``transport``: a plain
    transport's, a TLS transport's ``SSLSocket``; None for any other kind."""
    if isinstance(transport, PlainTransport | TLSTransport):
        return transport.sock
    return None


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
        """Forward until either side ends; ``*_early`` were sent before the handshake ended.

        Runs in the session's ``_cut`` scope, which is forwarding's scope too
        (``_forwarding``): disconnects and the watchdog cancel it and a Close sets its
        deadline; a forced cut is told apart by ``ended``. One scope, not one nested in
        the other, and not a nursery: a session in the engine has no child task (the
        pumps' nursery is opened only for a stretch on the task path,
        ``_forward_on_tasks``), so an idle engine session is one parked task in one
        scope. Why forwarding ended is ``_forward_end`` (None if a close deadline
        ended it); ``Session.run`` then goes on to closing.
        """
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
        watchdog = self.context.watchdog
        try:
            self._forwarding = self._cut
            # The handshake just carried data both ways (it may have been held at Open
            # for long): supervision and CONN's idle times start from here.
            now = self.last_ingress = self.last_egress = self._now()
            if watchdog is not None:
                self._watch_handle = watchdog.watch(self, now + self._watch_step())
            if self.vhost is not None and (traces := self.context.vhost_traces(self.vhost)):
                for observer in traces:  # VHOST TRACE: before the first frame
                    self.watch_frames(observer)
            self._forward_end = await self._deliver_early(client_early, broker_early)
            engine = self.context.engine
            while self._forward_end is None:
                if engine is not None and self._fits_engine(engine):
                    # The engine forwards until the session ends, or hands it back (a
                    # pause, a data-rate limit, the engine's stop) to the pumps. The wait
                    # is here, in this frame: an idle session in the engine is this task
                    # parked, no coroutine deeper (memory per session). Cancelling (a
                    # disconnect, the watchdog, a close deadline) evicts it
                    # (``Link.abort``); a peer the engine owed bytes stays in
                    # ``_writing``, so closing cuts it.
                    link = self._link = self._enter_engine(engine)
                    try:
                        result = await trio.lowlevel.wait_task_rescheduled(link.abort)
                    finally:
                        self._link = None
                    left = await self._left_engine(link, result)
                    if isinstance(left, End):
                        self._forward_end = left
                        break
                    if left is Outcome.FAILED:
                        engine = None  # the engine failed on it: tasks for its life
                    elif self._fits_engine(engine):
                        continue  # paused and resumed at once: straight back in
                # The pumps, until the session ends (``_forward_end``, the scope
                # cancelled) or may go back into the engine (an unpause, a data-rate
                # limit lifted).
                await self._forward_on_tasks()
        finally:
            self._forwarding = self._forwarding_tasks = None
            if watchdog is not None and self._watch_handle is not None:
                watchdog.forget(self._watch_handle)
                self._watch_handle = None

    async def _close_forwarded(self, cancelled: bool) -> None:
        """After forwarding (``cancelled``: its scope caught a cancellation): why it
        ended, then the close on whichever side is still there (closing.py), in a scope
        of its own that a forced cut cancels."""
        end = self._forward_end or End.TIMEOUT
        if self._pending_end is not None and cancelled:
            end = self._pending_end
        self.ended = end
        self.state = State.CLOSING
        self._cut = trio.CancelScope()
        with self._cut:
            await self._finish(end)

    def _fits_engine(self, engine: Engine) -> bool:
        """Whether the engine may forward this session now: ``_engine_takes`` and no
        pause (nor one still winding down), and no write of the task path unfinished."""
        return self._pause is None and not self._writing and self._engine_takes(engine)

    def _engine_takes(self, engine: Engine) -> bool:
        """Whether the engine may forward this session, a pause aside: plain TCP or TLS
        both ways (the engine reads a TLS transport through its ``recv`` and writes its
        ``SSLSocket``; a PROXY or in-memory transport stays on the task path), no
        data-rate budget pacing the client, nothing watching its frames (a trace reads
        them on the task path), and the real clock (the engine stamps
        ``time.monotonic``)."""
        return (
            engine.running
            and _engine_socket(self.client) is not None
            and self.broker is not None
            and _engine_socket(self.broker) is not None
            and self.data_budget is None
            and self._trace is None
            and self._now is time.monotonic
        )

    def _enter_engine(self, engine: Engine) -> Link:
        """Hand both sockets and scanners to the engine: the link to wait on."""
        assert self.broker is not None
        client, broker = _engine_socket(self.client), _engine_socket(self.broker)
        assert client is not None and broker is not None
        link = Link(
            self,
            (client, self.client, self.ingress),
            (broker, self.broker, self.egress),
            self._writing,
            self._on_channel_zero,
        )
        engine.enter(link)
        return link

    async def _left_engine(self, link: Link, result: Outcome) -> End | Outcome:
        """The link's ``Outcome`` read as the session's: why it ended, or how the engine
        handed it back (``LEFT``, or ``FAILED``: the engine failed on it) once what it
        owed each peer is written."""
        assert self.broker is not None
        if result is Outcome.LEFT or result is Outcome.FAILED:
            if result is Outcome.FAILED:
                self.log.warning("forwarding engine failed", error=link.detail)
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
            return result
        if result in (Outcome.CLIENT_ERROR, Outcome.BROKER_ERROR):
            sender = "client" if result is Outcome.CLIENT_ERROR else "broker"
            self.log.warning("malformed frame", sender=sender, error=link.detail)
        return _ENDS[result]

    async def _forward_on_tasks(self) -> None:
        """Forward with the pumps (and a pause's keeper) in a nursery of their own,
        until one direction ends (its ``End`` in ``_forward_end``, the forwarding scope
        cancelled) or every task there is done because the session may go back into
        the engine (``_back``)."""
        self._back = False
        try:
            async with trio.open_nursery() as nursery:
                # Only now: a keeper task (pause) writes to the broker too, so it must not
                # start while the early frames or the engine's owed bytes are written.
                self._forwarding_tasks = nursery
                self._start_keeper()  # paused before forwarding began, or in the engine
                nursery.start_soon(self._run_pump, self._downstream())
                await self._run_pump(self._upstream())
        finally:
            self._forwarding_tasks = None

    async def _run_pump(self, way: Direction) -> None:
        end = await self._pump(way)
        if end is None:
            # Back to the engine: this pump stopped at a park, with nothing in hand; the
            # other one stops at its own (woken if it is parked already).
            self._wake_pumps()
            return
        if self._forward_end is None:
            self._forward_end = end
        assert self._forwarding is not None
        self._forwarding.cancel()  # one direction ended: so does the other

    def _request_engine(self) -> None:
        """On the task path, whatever held the session there has gone (an unpause, a
        data-rate limit lifted): if the engine may take it, the pumps stop at their next
        park, each with nothing in hand, and the session goes back into the engine with
        its scanners (a partial frame stays in its scanner). A no-op otherwise."""
        engine = self.context.engine
        if self._forwarding_tasks is None or engine is None or not self._engine_takes(engine):
            return
        self._back = True
        self._wake_pumps()

    def _wake_pumps(self) -> None:
        """Wake a pump parked waiting for its socket, if it is there, so that it sees
        ``_back``. ``notify_closing`` wakes every wait on a socket, a write's too, so a
        socket with a write under way (in ``_writing``) is left alone: the pump writing
        to it stops at its next park anyway. No pause hold waits on a socket here (an
        unpause has already cancelled its wait)."""
        assert self.broker is not None
        for transport in (self.client, self.broker):
            if transport not in self._writing:
                sock = _engine_socket(transport)
                if sock is not None and (fd := sock.fileno()) != -1:
                    trio.lowlevel.notify_closing(fd)

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

    async def _pump(self, way: Direction) -> End | None:
        """Move ``way``'s bytes until one side ends; returns why, or None at a park
        once the session may go back into the engine (``_back``, not paused)."""
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
                if self._back and not self.paused:
                    return None  # nothing in hand: the engine may have the socket
                try:
                    await wait_readable()
                except trio.ClosedResourceError:
                    if self._back:
                        continue  # woken by ``_wake_pumps``: look again
                    raise
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
                    # ``Writing``'s dict operations themselves, not its add/discard: no
                    # Python call per read (its table stays: the task path's own cost).
                    writing[dst] = None
                    if dst_sock is None:
                        await dst.send_pieces(pieces)
                    else:
                        await sockets.send_pieces(dst_sock, pieces)
                    writing.pop(dst, None)
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
            self._request_engine()
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
            self._request_engine()  # and back into the engine, if it may take it
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
