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
  disconnect: a long stall becomes a clear 320 the client can recover from.

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
from amqprouter.net.transport import Transport, recv_some

#: A heartbeat frame: type 8, channel 0, empty payload, frame end.
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
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
