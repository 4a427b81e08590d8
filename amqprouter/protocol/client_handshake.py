"""The client-facing handshake: the router plays the broker.

::

    AWAITING_HEADER --header--> AWAITING_START_OK   (we sent Connection.Start)
    AWAITING_START_OK --StartOk--> AWAITING_TUNE_OK (we sent Connection.Tune)
    AWAITING_TUNE_OK --TuneOk--> AWAITING_OPEN
    AWAITING_OPEN --Open--> OPENED                  (event ClientOpened; no Open-Ok yet:
                                                     the broker's own Open-Ok is relayed)
    any state --Close--> CLOSED                     (Close-Ok queued; event PeerClosed)

The frame-reading states are ``_TRANSITIONS`` below, driven by the shared frame loop
(``machine.HandshakeMachine``). Heartbeats before Open are dropped (nothing to relay
them to yet). Any other frame, or a method out of order, raises a ProtocolError whose
reply code the session sends.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Final, NoReturn

from pamqp import commands

from amqprouter.protocol import constants, properties
from amqprouter.protocol.errors import BadProtocolHeader, FrameError, ProtocolError
from amqprouter.protocol.events import ClientOpened, PeerClosed, StartOkInfo
from amqprouter.protocol.field_table import long_string_at, scan_field_table
from amqprouter.protocol.frames import Frame, encode_method, method_name
from amqprouter.protocol.machine import HandshakeMachine, MethodId, Table, Transition
from amqprouter.protocol.tune import TuneParams, accept_client_tune_ok

_ACCEPTED_HEADERS = (constants.PROTOCOL_HEADER, constants.LEGACY_PROTOCOL_HEADER)
#: StartOk's client_properties table starts right after the class and method ids.
_START_OK_TABLE_AT = constants.FRAME_HEADER_SIZE + 4


class ClientState(enum.Enum):
    AWAITING_HEADER = "awaiting protocol header"
    AWAITING_START_OK = "awaiting Connection.StartOk"
    AWAITING_TUNE_OK = "awaiting Connection.TuneOk"
    AWAITING_OPEN = "awaiting Connection.Open"
    OPENED = "opened"
    CLOSED = "closed"


ClientEvent = ClientOpened | PeerClosed
_Row = Mapping[MethodId, Transition[ClientState, ClientEvent]]


@functools.lru_cache(maxsize=8)
def _tune_frame(offer: TuneParams) -> bytes:
    return encode_method(
        commands.Connection.Tune(
            channel_max=offer.channel_max, frame_max=offer.frame_max, heartbeat=offer.heartbeat
        )
    )


class ClientHandshake(HandshakeMachine[ClientState, ClientEvent]):
    """Sans-IO: ``receive_data`` bytes in, ``next_event`` events out, ``data_to_send`` bytes out."""

    def __init__(self, offer: TuneParams) -> None:
        super().__init__(_TRANSITIONS, ClientState.AWAITING_HEADER)
        self.offer = offer
        self._start_ok: StartOkInfo | None = None
        self._tune: TuneParams | None = None

    def next_event(self) -> ClientEvent | None:
        """Advance as far as the buffered bytes allow; None means "need more data"."""
        if self.state is ClientState.AWAITING_HEADER and not self._read_header():
            return None
        return super().next_event()

    def _read_header(self) -> bool:
        seen = self._reader.peek()[: constants.PROTOCOL_HEADER_SIZE]
        # Reject as soon as the bytes cannot become a valid header ("GET / HTTP" fails
        # at the first byte), rather than waiting for all eight.
        if not any(header.startswith(seen) for header in _ACCEPTED_HEADERS):
            raise BadProtocolHeader(seen)
        if self._reader.take(constants.PROTOCOL_HEADER_SIZE) is None:
            return False
        self._outgoing += properties.START_FRAME
        self.state = ClientState.AWAITING_START_OK
        return True

    def _peer(self) -> str:
        return "client"

    def _refuse(self, frame: Frame, row: _Row) -> NoReturn:
        expected = " or ".join(
            method_name(method_id) for method_id in row if method_id != constants.CONNECTION_CLOSE
        )
        raise ProtocolError(
            f"COMMAND_INVALID - expected {expected}, got {frame.name}",
            reply_code=constants.COMMAND_INVALID,
        )

    def _on_start_ok(self, frame: Frame) -> None:
        self._start_ok = read_start_ok(frame)
        self._outgoing += _tune_frame(self.offer)

    def _on_tune_ok(self, frame: Frame) -> None:
        self._tune = accept_client_tune_ok(
            self.offer, TuneParams.from_wire(*frame.unpack(constants.TUNE_ARGUMENTS))
        )
        self._reader.frame_max = self._tune.frame_max

    def _on_open(self, frame: Frame) -> ClientOpened:
        assert self._start_ok is not None and self._tune is not None
        return ClientOpened(
            vhost=frame.short_string(),
            start_ok=self._start_ok,
            tune=self._tune,
            pending=self._reader.drain(),
        )


_CLOSE: Final = Transition[ClientState, ClientEvent](HandshakeMachine._on_close, ClientState.CLOSED)
#: Every frame-reading state, every method it accepts, and where each leads.
_TRANSITIONS: Final[Table[ClientState, ClientEvent]] = {
    ClientState.AWAITING_START_OK: {
        constants.CONNECTION_START_OK: Transition(
            ClientHandshake._on_start_ok, ClientState.AWAITING_TUNE_OK
        ),
        constants.CONNECTION_CLOSE: _CLOSE,
    },
    ClientState.AWAITING_TUNE_OK: {
        constants.CONNECTION_TUNE_OK: Transition(
            ClientHandshake._on_tune_ok, ClientState.AWAITING_OPEN
        ),
        constants.CONNECTION_CLOSE: _CLOSE,
    },
    ClientState.AWAITING_OPEN: {
        constants.CONNECTION_OPEN: Transition(ClientHandshake._on_open, ClientState.OPENED),
        constants.CONNECTION_CLOSE: _CLOSE,
    },
}


def read_start_ok(frame: Frame) -> StartOkInfo:
    """What the router keeps of the client's StartOk; FrameError if it is malformed.

    The client properties are a field table: its nesting and lengths are checked
    first, so that pamqp's recursive decoder only ever gets a table it can finish
    (see field_table). The StartOk is replayed raw, so it is decoded only where pamqp
    could still refuse it (a key that is not ASCII, a timestamp, odd mechanism or
    locale bytes): the client then gets pamqp's verdict, as before. The few values the
    router reads (connection name; product, version and platform for CONN) are located
    by the same walk.
    """
    raw = frame.raw
    scan = scan_field_table(raw, _START_OK_TABLE_AT, len(raw) - 1, "client properties")
    mechanism = properties.plain_mechanism(raw) if scan.plain else None
    if mechanism is None:
        method = frame.decode()
        if not isinstance(method, commands.Connection.StartOk):  # pragma: no cover
            raise FrameError("FRAME_ERROR - Connection.StartOk did not decode as one")
        mechanism = method.mechanism
    name_at = scan.connection_name_at
    return StartOkInfo(
        raw=raw,
        mechanism=mechanism,
        connection_name=None if name_at < 0 else long_string_at(raw, name_at),
        identity_at=(scan.product_at, scan.version_at, scan.platform_at),
    )
