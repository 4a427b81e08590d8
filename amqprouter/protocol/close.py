"""The Connection.Close / Close-Ok handshake, in both directions."""

from __future__ import annotations

from pamqp import commands

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError
from amqprouter.protocol.events import CloseOkReceived, PeerClosed
from amqprouter.protocol.frames import Frame, FrameReader, encode_method

CLOSE_OK_FRAME = encode_method(commands.Connection.CloseOk())


def close_frame(reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    """A Connection.Close frame; the text is cut to the 255 octets a short string holds."""
    text = reply_text.encode()[:255].decode(errors="ignore")
    return encode_method(
        commands.Connection.Close(
            reply_code=reply_code, reply_text=text, class_id=class_id, method_id=method_id
        )
    )


def peer_closed(frame: Frame) -> PeerClosed:
    """Decode a Connection.Close frame into the event the session acts on."""
    method = frame.decode()
    if not isinstance(method, commands.Connection.Close):
        raise FrameError(f"expected Connection.Close, got {method.name}")
    text = method.reply_text
    return PeerClosed(
        reply_code=method.reply_code or 0,
        reply_text=text if isinstance(text, str) else bytes(text).decode(errors="replace"),
        class_id=method.class_id or 0,
        method_id=method.method_id or 0,
    )


class CloseHandshake:
    """After we sent Connection.Close: wait for the peer's Close-Ok.

    Everything else the peer sends meanwhile is discarded, as the spec asks. If the
    peer's own Close crossed ours, we answer it with Close-Ok and count that as done.
    """

    def __init__(self, frame_max: int) -> None:
        self._reader = FrameReader(frame_max)
        self._outgoing = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._reader.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

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
