"""Sans-IO AMQP 0.9.1: bytes in, events out. No sockets, no trio, no clock in here."""

from amqprouter.protocol.broker_handshake import BrokerGreeting, BrokerHandshake, BrokerState
from amqprouter.protocol.client_handshake import ClientHandshake, ClientState
from amqprouter.protocol.close import CLOSE_OK_FRAME, CloseHandshake, close_frame, peer_closed
from amqprouter.protocol.errors import (
    BadProtocolHeader,
    FrameError,
    NegotiationError,
    ProtocolError,
    UnexpectedFrame,
)
from amqprouter.protocol.events import (
    BrokerGreeted,
    BrokerOpened,
    ClientOpened,
    CloseOkReceived,
    PeerClosed,
    StartOkInfo,
)
from amqprouter.protocol.frames import Frame, FrameReader, FrameScanner
from amqprouter.protocol.tune import TuneParams

__all__ = [
    "CLOSE_OK_FRAME",
    "BadProtocolHeader",
    "BrokerGreeted",
    "BrokerGreeting",
    "BrokerHandshake",
    "BrokerOpened",
    "BrokerState",
    "ClientHandshake",
    "ClientOpened",
    "ClientState",
    "CloseHandshake",
    "CloseOkReceived",
    "Frame",
    "FrameError",
    "FrameReader",
    "FrameScanner",
    "NegotiationError",
    "PeerClosed",
    "ProtocolError",
    "StartOkInfo",
    "TuneParams",
    "UnexpectedFrame",
    "close_frame",
    "peer_closed",
]
