"""What the sans-IO machines share: bytes in through a frame reader, bytes out."""

from __future__ import annotations

from pamqp import commands

from amqprouter.protocol import constants
from amqprouter.protocol.errors import UnexpectedFrame
from amqprouter.protocol.events import PeerClosed
from amqprouter.protocol.frames import Frame, FrameReader, encode_method
from amqprouter.protocol.methods import peer_closed

__all__ = ["CLOSE_OK_FRAME", "Machine", "peer_closed"]

CLOSE_OK_FRAME = encode_method(commands.Connection.CloseOk())


class Machine:
    """``receive_data(bytes)`` in, ``data_to_send() -> bytes`` out (h11's shape)."""

    def __init__(self, frame_max: int = constants.FRAME_MIN_SIZE) -> None:
        self._reader = FrameReader(frame_max)
        self._outgoing = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._reader.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def _screen(self, frame: Frame, where: str) -> PeerClosed | bool:
        """The checks every handshake frame passes before its state looks at it.

        Returns False for a heartbeat (nothing to relay it to yet: dropped), a
        PeerClosed for Connection.Close (Close-Ok already queued), True for a
        channel-0 method the state should handle; raises UnexpectedFrame otherwise.
        """
        if frame.frame_type == constants.FRAME_HEARTBEAT:
            return False
        if frame.frame_type != constants.FRAME_METHOD or frame.channel != 0:
            raise UnexpectedFrame(
                f"UNEXPECTED_FRAME - {where}: frame type {frame.frame_type} on channel "
                f"{frame.channel}"
            )
        if frame.method_id == constants.CONNECTION_CLOSE:
            self._outgoing += CLOSE_OK_FRAME
            return peer_closed(frame)
        return True
