"""The client-facing handshake: the router plays the broker.

::

    AWAITING_HEADER --header--> AWAITING_START_OK   (we sent Connection.Start)
    AWAITING_START_OK --StartOk--> AWAITING_TUNE_OK (we sent Connection.Tune)
    AWAITING_TUNE_OK --TuneOk--> AWAITING_OPEN
    AWAITING_OPEN --Open--> OPENED                  (event ClientOpened; no Open-Ok yet:
                                                     the broker's own Open-Ok is relayed)
    any state --Close--> CLOSED                     (Close-Ok queued; event PeerClosed)

Heartbeats before Open are dropped (nothing to relay them to yet). Any other frame,
or a method out of order, raises a ProtocolError whose reply code the session sends.
"""

from __future__ import annotations

import enum

from pamqp import commands

from amqprouter.protocol import constants, properties
from amqprouter.protocol.close import CLOSE_OK_FRAME, peer_closed
from amqprouter.protocol.errors import BadProtocolHeader, FrameError, ProtocolError, UnexpectedFrame
from amqprouter.protocol.events import ClientOpened, PeerClosed, StartOkInfo
from amqprouter.protocol.frames import Frame, FrameReader, encode_method
from amqprouter.protocol.tune import TuneParams, accept_client_tune_ok

_ACCEPTED_HEADERS = (constants.PROTOCOL_HEADER, constants.LEGACY_PROTOCOL_HEADER)


class ClientState(enum.Enum):
    AWAITING_HEADER = "awaiting protocol header"
    AWAITING_START_OK = "awaiting Connection.StartOk"
    AWAITING_TUNE_OK = "awaiting Connection.TuneOk"
    AWAITING_OPEN = "awaiting Connection.Open"
    OPENED = "opened"
    CLOSED = "closed"


# The one method each state accepts (besides Connection.Close, accepted everywhere).
_EXPECTED: dict[ClientState, type[object]] = {
    ClientState.AWAITING_START_OK: commands.Connection.StartOk,
    ClientState.AWAITING_TUNE_OK: commands.Connection.TuneOk,
    ClientState.AWAITING_OPEN: commands.Connection.Open,
}


class ClientHandshake:
    """Sans-IO: ``receive_data`` bytes in, ``next_event`` events out, ``data_to_send`` bytes out."""

    def __init__(self, offer: TuneParams) -> None:
        self.offer = offer
        self.state = ClientState.AWAITING_HEADER
        self._reader = FrameReader()
        self._outgoing = bytearray()
        self._start_ok: StartOkInfo | None = None
        self._tune: TuneParams | None = None

    def receive_data(self, data: bytes) -> None:
        self._reader.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def next_event(self) -> ClientOpened | PeerClosed | None:
        """Advance as far as the buffered bytes allow; None means "need more data"."""
        if self.state is ClientState.AWAITING_HEADER and not self._read_header():
            return None
        while self.state in _EXPECTED:
            frame = self._reader.next_frame()
            if frame is None:
                return None
            event = self._handle(frame)
            if event is not None:
                return event
        return None

    def _read_header(self) -> bool:
        seen = self._reader.peek()[: constants.PROTOCOL_HEADER_SIZE]
        # Reject as soon as the bytes cannot become a valid header ("GET / HTTP" fails
        # at the first byte), rather than waiting for all eight.
        if not any(header.startswith(seen) for header in _ACCEPTED_HEADERS):
            raise BadProtocolHeader(seen)
        if self._reader.take(constants.PROTOCOL_HEADER_SIZE) is None:
            return False
        self._outgoing += encode_method(properties.connection_start())
        self.state = ClientState.AWAITING_START_OK
        return True

    def _handle(self, frame: Frame) -> ClientOpened | PeerClosed | None:
        if frame.frame_type == constants.FRAME_HEARTBEAT:
            return None
        if frame.frame_type != constants.FRAME_METHOD or frame.channel != 0:
            raise UnexpectedFrame(
                f"UNEXPECTED_FRAME - frame type {frame.frame_type} on channel {frame.channel} "
                f"while {self.state.value}"
            )
        if frame.method_id == constants.CONNECTION_CLOSE:
            self._outgoing += CLOSE_OK_FRAME
            self.state = ClientState.CLOSED
            return peer_closed(frame)
        method = frame.decode()
        expected = _EXPECTED[self.state]
        if not isinstance(method, expected):
            raise ProtocolError(
                f"COMMAND_INVALID - expected {expected.__qualname__}, got {method.name}",
                reply_code=constants.COMMAND_INVALID,
            )
        if isinstance(method, commands.Connection.StartOk):
            self._start_ok = StartOkInfo(
                raw=frame.raw,
                client_properties=dict(method.client_properties or {}),
                mechanism=method.mechanism,
            )
            self._outgoing += encode_method(
                commands.Connection.Tune(
                    channel_max=self.offer.channel_max,
                    frame_max=self.offer.frame_max,
                    heartbeat=self.offer.heartbeat,
                )
            )
            self.state = ClientState.AWAITING_TUNE_OK
            return None
        if isinstance(method, commands.Connection.TuneOk):
            self._tune = accept_client_tune_ok(
                self.offer, TuneParams(method.channel_max, method.frame_max, method.heartbeat)
            )
            self._reader.frame_max = self._tune.frame_max
            self.state = ClientState.AWAITING_OPEN
            return None
        assert isinstance(method, commands.Connection.Open)
        assert self._start_ok is not None and self._tune is not None
        vhost = method.virtual_host
        if not isinstance(vhost, str):
            raise FrameError("Connection.Open virtual_host is not UTF-8")
        self.state = ClientState.OPENED
        return ClientOpened(
            vhost=vhost, start_ok=self._start_ok, tune=self._tune, pending=self._reader.drain()
        )
