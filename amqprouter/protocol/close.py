"""The Connection.Close / Close-Ok handshake, in both directions."""

from __future__ import annotations

from pamqp import commands

from amqprouter.protocol import constants
from amqprouter.protocol.events import CloseOkReceived, PeerClosed
from amqprouter.protocol.frames import encode_method
from amqprouter.protocol.machine import CLOSE_OK_FRAME, Machine, peer_closed

__all__ = ["CLOSE_OK_FRAME", "CloseHandshake", "close_frame", "peer_closed"]


def close_frame(reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    """A Connection.Close frame; the text is cut to the 255 octets a short string holds."""
    text = reply_text.encode()[:255].decode(errors="ignore")
    return encode_method(
        commands.Connection.Close(
            reply_code=reply_code, reply_text=text, class_id=class_id, method_id=method_id
        )
    )


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
