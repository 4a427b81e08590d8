"""One client connection, from accept to close.

Theory of operation
-------------------

Both peers are ``Transport`` objects (net/transport.py), never raw sockets; how a new
kind (TLS, PROXY) plugs in at accept and at connect is in ``connect.py``. What the
session needs of its server comes in one ``SessionContext`` (context.py).

A session's life is cut into parts, one module each, all over one state (state.py):

1. **Opening** (opening.py): the client handshake, admission, the hold at Open, auth,
   the broker connect and the replay of the client's handshake, each bounded; it
   hands forwarding an ``Opened`` record.
2. **Forwarding** (forwarding.py): two pumps, one per ``Direction``, move whole
   frames, decoding channel 0's methods only. The server's ``Watchdog`` looks at the
   session now and then (``Supervised.watch_check``, watch.py): a peer silent for two
   heartbeat intervals, or a write unfinished for the write timeout, ends forwarding
   like a disconnect does.
3. **Closing** (closing.py): the first pump to stop says why (``End``); the other is
   cancelled, and the session finishes the close handshake on whichever side is still
   there, each wait bounded.

This module puts the parts together (``run``) and holds session control: ``pause``,
``unpause``, ``disconnect`` and ``watch_frames`` (traces and captures, trace.py) reach
a running session without touching the pumps' per-frame work. A disconnect records
its ``End`` and cancels the forwarding scope (or, before forwarding, the opening
scope; a forced cut cancels everything); a pause is one attribute the ingress pump
looks at once per read, and a heartbeat keeper task the session starts in its own
forwarding nursery (pause.py). A client whose vhost is paused is held at
Connection.Open, before any broker is chosen, and routed with the table of the moment
it is resumed.

Limits (the server's limits.py) meet a session at two points: ``admit``, asked once at
Connection.Open before the pause hold and routing (a refusal is a Close after
``LIMITED_CLOSE_DELAY``), and ``data_budget``, the other attribute the ingress pump
looks at once per read (None unless a data-rate limit applies).

Nothing here blocks without a deadline, and nothing escapes ``run``: one broken
session must never take the server down.
"""

from __future__ import annotations

from collections.abc import Callable

from amqprouter.net.sockets import PeerGone
from amqprouter.session.closing import Closing, End
from amqprouter.session.forwarding import Forwarding
from amqprouter.session.opening import Opening
from amqprouter.session.pause import Pause, hold_ingress, keep_broker_alive
from amqprouter.session.pooling import Pooling
from amqprouter.session.state import State
from amqprouter.session.trace import FrameObserver, Tap
from amqprouter.session.watch import Supervised

__all__ = ["End", "Session", "State"]


class Session(Opening, Pooling, Forwarding, Supervised, Closing):
    """One routed connection: its state (state.py), the parts of its life, and session
    control; readable by the control plane and stats."""

    __slots__ = ()

    async def run(self, ended: Callable[[Session], object] | None = None) -> None:
        """Serve the connection to its end; never raises except on cancellation.

        ``ended`` is called with the session once it is closed (the server's
        bookkeeping: here rather than in a coroutine of the server's around this one,
        which every idle session would hold).
        """
        try:
            forwarded = False
            # The opening and forwarding in this frame, not a coroutine below it (an idle
            # session holds every frame of its await chain), in one scope: a forced cut
            # cancels it, and while forwarding it is forwarding's scope (``_forward``).
            with self._cut as scope:
                opened = await self._open()
                if self._pending_end is not None:
                    await self._disconnect_before_forwarding()
                elif opened is not None:
                    tune, client_early, broker_early = (
                        opened.tune,
                        opened.client_early,
                        opened.broker_early,
                    )
                    del opened
                    if self._link_of_pool is not None:
                        # Pooling mode: served on a shared broker connection (pooling.py),
                        # which closes on its own.
                        await self._serve_pooled(tune, client_early, broker_early)
                    else:
                        forwarded = True
                        await self._forward(tune, client_early, broker_early)
            if forwarded and self.ended is not End.OPERATOR_FORCED:
                await self._close_forwarded(scope.cancelled_caught)
        except Exception:
            self.log.exception("session failed")
        finally:
            self.state = State.CLOSED
            if self._trace is not None:  # what watched it hears that it ended
                self._trace.ended(self)
                self._trace = None
            if self._link_of_pool is not None:
                # Joined a pooled connection but ended before serving on it (serving
                # detaches itself): its place there is given back.
                self._link_of_pool.forget(self.id)
            if self.route is not None:
                self.route.release()
            self.client.close()
            if self.broker is not None:
                self.broker.close()
            if ended is not None:
                ended(self)

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
        if self._link_of_pool is not None:
            # A pooled session's broker connection is shared: there is no broker side of
            # its own to keep alive while its client is held (docs/pooling.md).
            return False
        self.paused = True
        if self._pause is None:
            self._pause = Pause()
        else:
            self._pause.rearm()
        if self._link is not None and self.context.engine is not None:
            # The pumps hold and the keeper heartbeats: the session leaves the engine
            # for the task path, until the unpause.
            self.context.engine.evict(self._link)
        self._start_keeper()
        self.log.info("session paused")
        return True

    def watch_frames(self, observer: FrameObserver) -> bool:
        """Show ``observer`` (a trace, a capture: trace.py) every frame forwarded from now
        on; False if the session is ending. A session inside the engine leaves it for
        the task path first, as for a pause, so the engine's thread never traces. False
        for a pooled session too: its frames pass through the pool, not ``_scanned``."""
        if self.state in (State.CLOSING, State.CLOSED) or self._link_of_pool is not None:
            return False
        if self._trace is None:
            self._trace = Tap([observer])
        elif observer not in self._trace.observers:  # a VHOST TRACE met twice
            self._trace.observers.append(observer)
        if self._link is not None and self.context.engine is not None:
            self.context.engine.evict(self._link)
        return True

    @property
    def watchers(self) -> list[FrameObserver]:
        """What watches this session's frames now (traces, captures)."""
        return [] if self._trace is None else list(self._trace.observers)

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
        self._request_engine()  # on the task path for the pause: back into the engine
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
        if self._pending_end is not None or self.state is State.CLOSING:
            return False
        if end is End.OPERATOR_BACKEND and self._forwarding is None:
            return False
        self._pending_end, self.end_reason = end, reason
        self.log.info("session disconnect requested", reason=end.value, detail=reason)
        scope = self._forwarding or self._opening
        if scope is not None:
            scope.cancel()
        return True

    def _release(self, pause: Pause) -> None:
        """Forget ``pause`` once it is resumed and nothing uses it any more."""
        if pause.finished and self._pause is pause:
            self._pause = None

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
        if self._forwarding_tasks is not None and pause is not None and not pause.keeper_running:
            try:
                self._forwarding_tasks.start_soon(self._keep_broker_alive, pause)
            except RuntimeError:
                # "Nursery is closed to new arrivals": the pumps have just stopped to go
                # back into the engine; the session, paused, starts them again with the
                # keeper (``_forward_on_tasks``).
                return
            pause.keeper_running = True

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
