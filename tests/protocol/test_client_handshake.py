from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands

from amqprouter.protocol import (
    BadProtocolHeader,
    ClientHandshake,
    ClientOpened,
    ClientState,
    FrameError,
    NegotiationError,
    PeerClosed,
    ProtocolError,
    TuneParams,
    UnexpectedFrame,
    constants,
    properties,
)
from tests.protocol.helpers import (
    CLIENT_HANDSHAKE,
    HEARTBEAT,
    OPEN,
    START_OK,
    TUNE_OK,
    decode_all,
    feed_bytewise,
    method,
)


def test_full_handshake_byte_by_byte() -> None:
    machine = ClientHandshake(TuneParams())
    events, sent = feed_bytewise(machine, CLIENT_HANDSHAKE)
    start, tune = decode_all(sent)
    assert isinstance(start, commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    # pamqp writes table keys sorted; clients look capabilities up by name.
    capabilities: Any = start.server_properties["capabilities"]
    assert sorted(capabilities) == sorted(properties.CAPABILITIES)
    assert all(capabilities.values())
    assert start.server_properties["product"] == "amqprouter"
    assert start.mechanisms == "PLAIN AMQPLAIN"
    assert isinstance(tune, commands.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert sent == method(properties.connection_start()) + method(
        commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    )
    [opened] = events
    assert isinstance(opened, ClientOpened)
    assert opened.vhost == "/prod"
    assert opened.start_ok.raw == method(START_OK)
    assert opened.start_ok.connection_name == "orders-service"
    assert opened.tune == TuneParams(2047, 131072, 60)
    assert opened.pending == b""
    assert machine.state is ClientState.OPENED


def test_legacy_header_accepted() -> None:
    machine = ClientHandshake(TuneParams())
    data = constants.LEGACY_PROTOCOL_HEADER + CLIENT_HANDSHAKE[8:]
    events, _ = feed_bytewise(machine, data)
    assert isinstance(events[-1], ClientOpened)


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x01\x01\x00\x0a",  # AMQP 0-10: pamqp would accept it
        b"AMQP\x00\x00\x09\x00",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01",  # a TLS ClientHello
    ],
)
def test_wrong_protocol_header_rejected(header: bytes) -> None:
    machine = ClientHandshake(TuneParams())
    with pytest.raises(BadProtocolHeader) as caught:
        feed_bytewise(machine, header)
    assert caught.value.received == header[: len(caught.value.received)]


def test_garbage_rejected_at_first_wrong_byte() -> None:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(b"G")
    with pytest.raises(BadProtocolHeader):
        machine.next_event()


def test_heartbeats_before_open_are_dropped() -> None:
    machine = ClientHandshake(TuneParams())
    data = (
        constants.PROTOCOL_HEADER
        + method(START_OK)
        + HEARTBEAT
        + method(TUNE_OK)
        + HEARTBEAT
        + method(OPEN)
    )
    events, _ = feed_bytewise(machine, data)
    assert [type(e) for e in events] == [ClientOpened]


def test_pipelined_frames_after_open_are_kept_for_forwarding() -> None:
    machine = ClientHandshake(TuneParams())
    channel_open = method(commands.Channel.Open(), 1)
    machine.receive_data(CLIENT_HANDSHAKE + channel_open)
    opened = machine.next_event()
    assert isinstance(opened, ClientOpened)
    assert opened.pending == channel_open


def test_client_close_during_handshake_gets_close_ok() -> None:
    machine = ClientHandshake(TuneParams())
    close = commands.Connection.Close(
        reply_code=200, reply_text="changed my mind", class_id=0, method_id=0
    )
    events, sent = feed_bytewise(
        machine, constants.PROTOCOL_HEADER + method(START_OK) + method(close)
    )
    assert events == [PeerClosed(200, "changed my mind", 0, 0)]
    assert sent.endswith(method(commands.Connection.CloseOk()))
    assert machine.state is ClientState.CLOSED


def test_method_out_of_order_is_command_invalid() -> None:
    machine = ClientHandshake(TuneParams())
    with pytest.raises(ProtocolError) as caught:
        feed_bytewise(machine, constants.PROTOCOL_HEADER + method(OPEN))
    assert caught.value.reply_code == 503
    assert "expected Connection.StartOk, got Connection.Open" in str(caught.value)


def test_content_frame_before_open_is_unexpected() -> None:
    machine = ClientHandshake(TuneParams())
    with pytest.raises(UnexpectedFrame) as caught:
        feed_bytewise(machine, constants.PROTOCOL_HEADER + method(commands.Channel.Open(), 1))
    assert caught.value.reply_code == 505


def test_oversized_frame_before_tune_is_frame_error() -> None:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(
        constants.PROTOCOL_HEADER + constants.FRAME_HEADER_STRUCT.pack(1, 0, 10_000)
    )
    with pytest.raises(FrameError):
        machine.next_event()


@pytest.mark.parametrize(
    ("tune_ok", "message"),
    [
        (
            commands.Connection.TuneOk(channel_max=4000, frame_max=131072, heartbeat=60),
            "channel_max=4000",
        ),
        (
            commands.Connection.TuneOk(channel_max=10, frame_max=262144, heartbeat=60),
            "frame_max=262144",
        ),
        (
            commands.Connection.TuneOk(channel_max=10, frame_max=1024, heartbeat=60),
            "below the minimum",
        ),
    ],
)
def test_tune_ok_above_our_offer_is_refused(
    tune_ok: commands.Connection.TuneOk, message: str
) -> None:
    machine = ClientHandshake(TuneParams())
    with pytest.raises(NegotiationError) as caught:
        feed_bytewise(machine, constants.PROTOCOL_HEADER + method(START_OK) + method(tune_ok))
    assert caught.value.reply_code == 530
    assert message in str(caught.value)


def test_tune_ok_zero_means_our_offer() -> None:
    machine = ClientHandshake(TuneParams(channel_max=100, frame_max=8192, heartbeat=30))
    tune_ok = commands.Connection.TuneOk(channel_max=0, frame_max=0, heartbeat=0)
    events, _ = feed_bytewise(
        machine, constants.PROTOCOL_HEADER + method(START_OK) + method(tune_ok) + method(OPEN)
    )
    assert events[0].tune == TuneParams(channel_max=100, frame_max=8192, heartbeat=0)


@pytest.mark.parametrize(
    "values",
    [{"channel_max": 65536}, {"frame_max": 2**32}, {"heartbeat": -1}, {"channel_max": -1}],
)
def test_tune_params_outside_their_wire_sizes_are_refused_at_once(values: dict[str, int]) -> None:
    # Checked when made (from the command line), not when a Tune is encoded for a client.
    with pytest.raises(ValueError, match=next(iter(values))):
        TuneParams(**values)


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (b"\x00\x0a\x00\x63", "FRAME_ERROR - unknown method 10.99"),
        (b"\x00\x0a", "FRAME_ERROR - method frame too short for a method id"),
    ],
)
def test_undefined_or_truncated_method_is_frame_error(payload: bytes, text: str) -> None:
    machine = ClientHandshake(TuneParams())
    bad = constants.FRAME_HEADER_STRUCT.pack(1, 0, len(payload)) + payload + b"\xce"
    with pytest.raises(FrameError) as caught:
        feed_bytewise(machine, constants.PROTOCOL_HEADER + bad)
    assert caught.value.reply_code == 501
    assert str(caught.value) == text
