"""The end of a session: why forwarding stopped (``End``), what that leaves owed to
each peer, and closing each peer within its bound.

The first pump to stop says why (``End``); the other is cancelled, and the session,
now the only user of both transports, finishes the close handshake on whichever side
is still there (``_finish``): a 320 to a client whose broker vanished, a Close to a
broker whose client vanished, a Close 320 and then a Close 200 for a graceful
disconnect, a cut for a peer that stopped reading. Each wait is bounded by the
``close`` timeout (a graceful disconnect's client by ``disconnect``). A peer with a
write still in progress sits inside a frame, where a Close would be garbage: it is
cut instead.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from typing import Final

import trio

from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import Transport, converse
from amqprouter.protocol import CloseHandshake, ProtocolError, close_frame, constants
from amqprouter.session.state import SessionState, State


class End(enum.Enum):
    """Why forwarding stopped; decides what is still owed to each side."""

    CLEAN = "close handshake completed"
    CLIENT_GONE = "client closed the TCP connection"
    BROKER_GONE = "broker closed the TCP connection"
    CLIENT_ERROR = "client sent a malformed frame"
    BROKER_ERROR = "broker sent a malformed frame"
    TIMEOUT = "close handshake timed out"
    # Ended on purpose by the router (a control command, a drain, the pause limit,
    # shutdown); ``Session.end_reason`` says which. Counted as graceful.
    OPERATOR = "disconnected gracefully by the router"
    OPERATOR_FORCED = "both connections cut by the router"
    OPERATOR_BACKEND = "broker connection cut by the router"
    # Supervision (``Session.watch_check``): a peer silent for two heartbeat intervals
    # is dead, as RabbitMQ judges; one that takes no data for the write timeout has
    # stopped reading. ``Session.end_reason`` says for how long.
    BROKER_SILENT = "broker sent nothing for two heartbeat intervals"
    BROKER_STUCK = "broker stopped reading"
    CLIENT_SILENT = "client sent nothing for two heartbeat intervals"
    CLIENT_STUCK = "client stopped reading"


# What the client is told when forwarding ends for each reason that leaves it alive.
_CLIENT_CLOSE: Final[dict[End, Callable[[str], tuple[int, str]]]] = {
    End.BROKER_GONE: lambda backend: (
        constants.CONNECTION_FORCED,
        f"CONNECTION_FORCED - broker {backend} closed the connection",
    ),
    End.BROKER_ERROR: lambda backend: (
        constants.CONNECTION_FORCED,
        f"CONNECTION_FORCED - broker {backend} sent a malformed frame",
    ),
    End.CLIENT_ERROR: lambda _backend: (constants.FRAME_ERROR, "FRAME_ERROR - malformed frame"),
}


class Closing(SessionState):
    """Ending a session: telling each peer what it is owed, each wait bounded."""

    __slots__ = ()

    async def _finish(self, end: End) -> None:
        assert self.backend is not None
        backend = self.backend.label
        if end is End.CLEAN:
            side, code, text = self._closed_by or ("", 0, "")
            self.log.info(
                "session closed cleanly", closed_by=side, reply_code=code, reply_text=text
            )
            return
        self.log.info("session ending", reason=end.value, detail=self.end_reason)
        if end is End.OPERATOR:
            # The client first (it may still be sending), then the broker, each bounded.
            await self._close_client(
                constants.CONNECTION_FORCED,
                f"CONNECTION_FORCED - {self.end_reason}",
                answer_within=self.settings.timeouts.disconnect,
            )
            await self._close_broker(constants.REPLY_SUCCESS, f"amqprouter: {self.end_reason}")
            return
        if end in (End.BROKER_SILENT, End.BROKER_STUCK):
            assert self.broker is not None
            self.broker.close()  # frozen or not reading: a Close would wait in vain
            await self._close_client(
                constants.CONNECTION_FORCED, f"CONNECTION_FORCED - {self.end_reason}"
            )
            return
        if end in (End.CLIENT_SILENT, End.CLIENT_STUCK):
            # The client gets a Close too (cut instead if a write to it is under way):
            # a frozen client that wakes up reads why its connection ended.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._close_client,
                    constants.CONNECTION_FORCED,
                    f"CONNECTION_FORCED - {self.end_reason}",
                )
                nursery.start_soon(
                    self._close_broker, constants.REPLY_SUCCESS, f"amqprouter: {self.end_reason}"
                )
            return
        if end is End.OPERATOR_BACKEND:
            assert self.broker is not None
            self.broker.close()  # cut, as amqpprox's BACKEND_DISCONNECT does
            await self._close_client(
                constants.CONNECTION_FORCED,
                f"CONNECTION_FORCED - broker {backend} disconnected by the router "
                f"({self.end_reason})",
            )
            return
        async with trio.open_nursery() as nursery:
            if end in _CLIENT_CLOSE:
                nursery.start_soon(self._close_client, *_CLIENT_CLOSE[end](backend))
            if end in (End.CLIENT_GONE, End.CLIENT_ERROR):
                nursery.start_soon(
                    self._close_broker,
                    constants.REPLY_SUCCESS,
                    f"amqprouter: {end.value} ({endpoint(self.client_address)})",
                )

    async def _close_client(
        self,
        code: int,
        text: str,
        class_id: int = 0,
        method_id: int = 0,
        *,
        answer_within: float | None = None,
    ) -> None:
        frame = close_frame(code, text, class_id, method_id)
        unread = self.ingress.take_pending()
        if self._pause is not None:  # what the client sent while paused follows it
            unread += self._pause.take_held()
        await self._close_peer(self.client, frame, unread, answer_within)

    async def _close_broker(self, code: int, text: str) -> None:
        if self.broker is not None:
            await self._close_peer(self.broker, close_frame(code, text), self.egress.take_pending())

    async def _close_peer(
        self,
        peer: Transport,
        frame: bytes,
        unread: bytes,
        answer_within: float | None = None,
    ) -> None:
        """Send Close, wait (bounded) for Close-Ok, then close the transport.

        ``unread`` is the partial frame the peer was sending when forwarding stopped,
        so that its Close-Ok is read from a frame boundary.
        """
        if peer in self._writing:
            peer.close()
            if peer is self.client:
                self.client_cut = "a write to it was under way"
            return
        machine = CloseHandshake(self.settings.tune.frame_max)
        machine.receive_data(unread)
        wait = self.settings.timeouts.close if answer_within is None else answer_within
        with trio.move_on_after(wait) as waiting:
            try:
                await peer.send_all(frame)
                await converse(peer, machine)
            except (PeerGone, ProtocolError):
                pass
        if waiting.cancelled_caught and peer is self.client:
            self.client_cut = f"no Close-Ok within {wait:g}s"
            self.log.warning("client cut: it did not answer Close", timeout=wait)
        peer.close()

    async def _send_quietly(self, peer: Transport, data: bytes) -> None:
        with trio.move_on_after(self.settings.timeouts.close), contextlib.suppress(PeerGone):
            await peer.send_all(data)

    async def _disconnect_before_forwarding(self) -> None:
        """A graceful disconnect that arrived before forwarding: tell the client, then close."""
        self.ended = self._pending_end
        self.state = State.CLOSING
        if self.broker is not None:
            self.broker.close()  # its handshake never finished
        await self._close_client(
            constants.CONNECTION_FORCED,
            f"CONNECTION_FORCED - {self.end_reason}",
            answer_within=self.settings.timeouts.disconnect,
        )
