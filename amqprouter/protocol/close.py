"""The Connection.Close / Close-Ok handshake, in both directions."""

from __future__ import annotations

from amqprouter.protocol import constants
from amqprouter.protocol.events import CloseOkReceived, PeerClosed
from amqprouter.protocol.machine import CLOSE_OK_FRAME, Machine, peer_closed
from amqprouter.protocol.methods import close_frame

__all__ = ["CLOSE_OK_FRAME", "CloseHandshake", "close_frame", "peer_closed"]


class CloseHandshake(Machine):
    """After we sent Connection.Close: wait for the peer's Close-Ok.

    Everything else the peer sends meanwhile is discarded, as the spec asks. If the
    peer's own Close crossed ours, we answer it with Close-Ok and count that as done.
    """

    def next_event(self) -> CloseOkReceived | PeerClosed | None:
        while (frame := self._reader.next_frame()) is not None:
            if frame.channel != 0:
                continue
            method_id = frame.method_id
            if method_id == constants.CONNECTION_CLOSE_OK:
                return CloseOkReceived()
            if method_id == constants.CONNECTION_CLOSE:
                self._outgoing += CLOSE_OK_FRAME
                return peer_closed(frame)
        return None
