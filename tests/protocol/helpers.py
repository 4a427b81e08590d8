"""Drive the sans-IO machines byte by byte, as a slow network would."""

from __future__ import annotations

from typing import Any, Protocol

from pamqp import commands, frame

from amqprouter.protocol import constants


class Machine(Protocol):
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Any: ...
    def data_to_send(self) -> bytes: ...


def feed_bytewise(machine: Machine, data: bytes) -> tuple[list[Any], bytes]:
    """Feed ``data`` one byte at a time; return every event and every byte sent."""
    events: list[Any] = []
    sent = bytearray()
    for index in range(len(data)):
        machine.receive_data(data[index : index + 1])
        while (event := machine.next_event()) is not None:
            events.append(event)
        sent += machine.data_to_send()
    return events, bytes(sent)


def method(value: Any, channel: int = 0) -> bytes:
    return frame.marshal(value, channel)


START_OK = commands.Connection.StartOk(
    client_properties={
        "product": "test-client",
        "connection_name": "orders-service",
        "capabilities": {"authentication_failure_close": True, "basic.nack": True},
    },
    mechanism="PLAIN",
    response="\0guest\0guest",
    locale="en_US",
)
TUNE_OK = commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)
OPEN = commands.Connection.Open(virtual_host="/prod")
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
CLIENT_HANDSHAKE = constants.PROTOCOL_HEADER + method(START_OK) + method(TUNE_OK) + method(OPEN)


def decode_all(data: bytes) -> list[Any]:
    """Every frame in ``data`` decoded with pamqp (test side only)."""
    out = []
    while data:
        consumed, _channel, value = frame.unmarshal(data)
        out.append(value)
        data = data[consumed:]
    return out
