"""Pausing a session without casualties: the hold, the heartbeats, the limit.

A paused session forwards nothing from its client to its broker, but neither peer
may be lost meanwhile (amqpprox#66: there, both sides miss heartbeats and drop the
connection after about two intervals). So while paused:

* the client's data is **held**, not forwarded: read into memory up to
  ``HOLD_LIMIT`` bytes, then not read at all, so TCP back-pressure stops the client
  instead of the router's memory growing. Broker→client traffic keeps flowing, and
  on resume the held bytes go first, unchanged and in order;
* the router **heartbeats the broker** (which no longer hears the client) every half
  negotiated heartbeat interval, as RabbitMQ itself paces its heartbeats. A client
  held at Connection.Open, before any broker exists, is heartbeated the same way;
* a pause longer than ``Timeouts.max_pause`` ends the session with a graceful
  disconnect: a long stall becomes a clear 320 the client can recover from, and so
  does a broker that takes no heartbeat within the write timeout (the watchdog does
  not judge a paused session's client→broker side: this is its bound there).

The session's pause parts live here as functions over transports: ``hold_at_open``
(no broker yet), ``hold_ingress`` (the ingress pump's hold) and ``keep_broker_alive``
(the keeper task); the session wraps them with its logging and disconnects.

A heartbeat is only written where the broker's byte stream is at a frame boundary:
``FrameScanner`` forwards whole frames only, so that holds whenever no forwarding
write is in progress (the session's ``_writing`` set says). The ``Pause`` object is
what the ingress pump, the keeper task and the control plane share; it lives until
every one of them is done with it, so that a resumed pump never writes while a
heartbeat is still half sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import trio

from amqprouter.net import sockets
from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import Transport, Writing, recv_some
from amqprouter.protocol import constants

#: A heartbeat frame: channel 0, empty payload.
HEARTBEAT_FRAME: Final = bytes([constants.FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, constants.FRAME_END])
#: A paused session reads at most this much of its client's data before it stops
#: reading (then TCP back-pressure holds the client). Far above one frame at the
#: default frame_max (128 KiB), small enough for thousands of paused sessions.
HOLD_LIMIT: Final = 1 << 20


def heartbeat_period(heartbeat: int) -> float:
    """Seconds between the heartbeats the router sends for a negotiated ``heartbeat``.

    Half the interval, as RabbitMQ sends its own; infinite when heartbeats are off (0).
    """
    return heartbeat / 2 if heartbeat > 0 else math.inf


class Pause:
    """One pause of one session, from PAUSE until the last user is done with it.

    ``resumed`` is set by UNPAUSE. ``held`` is the client data read while paused
    (not yet scanned or forwarded). ``holding`` is true while the ingress pump sits in
    the hold, ``keeper_running`` while the heartbeat keeper task lives, and
    ``heartbeat_sent`` is an event that is unset while a heartbeat write is in flight.
    """

    def __init__(self) -> None:
        self.started = trio.current_time()
        self.resumed = False
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.holding = False
        self.keeper_running = False
        self.heartbeat_sent = trio.Event()
        self.heartbeat_sent.set()
        self._wakeups: set[trio.CancelScope] = set()

    def deadline(self, max_pause: float) -> float:
        """When this pause has lasted too long (trio time)."""
        return self.started + max_pause

    def rearm(self) -> None:
        """PAUSE again before the previous pause was fully wound down: reuse it."""
        self.resumed = False
        self.started = trio.current_time()

    def resume(self) -> None:
        """UNPAUSE: wake everything waiting on this pause."""
        self.resumed = True
        for scope in self._wakeups:
            scope.cancel()

    @property
    def finished(self) -> bool:
        """Resumed, and neither the pump nor the keeper still uses it."""
        return self.resumed and not self.holding and not self.keeper_running

    def take_held(self) -> bytes:
        data = b"".join(self.held)
        self.held.clear()
        self.held_bytes = 0
        return data

    @contextmanager
    def wakeable(self, deadline: float = math.inf) -> Iterator[trio.CancelScope]:
        """A scope that ends at ``deadline`` or at ``resume()``, whichever comes first."""
        scope = trio.CancelScope(deadline=deadline)
        if self.resumed:
            scope.cancel()
        self._wakeups.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._wakeups.discard(scope)


async def hold(peer: Transport, pause: Pause, until: float = math.inf) -> None:
    """Read ``peer`` into ``pause.held`` until resumed or ``until`` (trio time).

    Stops reading once ``HOLD_LIMIT`` bytes are held (the peer then meets TCP
    back-pressure). Raises PeerGone if the peer leaves.
    """
    while not pause.resumed and trio.current_time() < until:
        room = HOLD_LIMIT - pause.held_bytes
        with pause.wakeable(until):
            if room <= 0:
                await trio.sleep_forever()
            data = await recv_some(peer, min(room, sockets.READ_SIZE))
            # No checkpoint between the read and this: a wake-up cannot lose data.
            pause.held.append(data)
            pause.held_bytes += len(data)


async def hold_at_open(
    client: Transport,
    pause: Pause,
    *,
    heartbeat: int,
    max_pause: float,
    writing: Writing,
) -> bool:
    """Hold a client at Connection.Open until resumed: True, or False once the pause
    has lasted ``max_pause``. PeerGone if the client leaves.

    No broker exists yet, so the router keeps the client alive itself: it sends
    heartbeats at the client's negotiated interval (``heartbeat``) and holds (bounded)
    whatever the client sends, to forward after the broker's Open-Ok. ``writing`` is
    the session's set of transports with a write under way.
    """
    period = heartbeat_period(heartbeat)
    next_beat = trio.current_time() + period
    while not pause.resumed:
        deadline = pause.deadline(max_pause)
        await hold(client, pause, min(next_beat, deadline))
        now = trio.current_time()
        if pause.resumed:
            break
        if now >= pause.deadline(max_pause):
            return False
        if now >= next_beat:
            next_beat = now + period
            with trio.move_on_at(deadline):
                writing.add(client)
                await client.send_all(HEARTBEAT_FRAME)
                writing.discard(client)
    return True


async def hold_ingress(client: Transport, pause: Pause, data: bytes) -> bytes:
    """The ingress pump while paused: hold ``data`` and what follows until resumed.

    Returns everything held, to forward in order; PeerGone if the client leaves.
    """
    pause.held.append(data)
    pause.held_bytes += len(data)
    pause.holding = True
    try:
        await hold(client, pause)
        # A heartbeat still being written goes out whole before any client frame.
        await pause.heartbeat_sent.wait()
    finally:
        pause.holding = False
    return pause.take_held()


async def keep_broker_alive(
    broker: Transport,
    pause: Pause,
    *,
    heartbeat: int,
    max_pause: float,
    write_timeout: float,
    writing: Writing,
) -> str | None:
    """While paused: heartbeat the broker every half ``heartbeat``, at frame boundaries.

    Returns None once resumed, else why the session must end: the pause lasted
    ``max_pause``, or the broker did not take a heartbeat within ``write_timeout``
    (it is then left in ``writing``, so that it is cut rather than sent a Close).
    PeerGone if the broker left (its pump sees that too and ends the session).
    """
    period = heartbeat_period(heartbeat)
    next_beat = trio.current_time() + period
    while not pause.resumed:
        with pause.wakeable(min(next_beat, pause.deadline(max_pause))):
            await trio.sleep_forever()
        if pause.resumed:
            break
        now = trio.current_time()
        if now >= pause.deadline(max_pause):
            return f"paused for longer than {max_pause:g}s"
        if now >= next_beat:
            next_beat = now + period
            # Only at a frame boundary: not while a forwarding write is under way.
            if broker in writing:
                continue
            pause.heartbeat_sent = trio.Event()
            writing.add(broker)
            try:
                with trio.move_on_after(write_timeout) as write:
                    await broker.send_all(HEARTBEAT_FRAME)
            except PeerGone:
                pause.heartbeat_sent.set()
                raise
            if write.cancelled_caught:
                return f"broker did not read for {write_timeout:g}s while paused"
            writing.discard(broker)
            pause.heartbeat_sent.set()
    return None
