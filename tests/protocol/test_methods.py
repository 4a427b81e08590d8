"""Methods written and read by hand: what pamqp refuses but RabbitMQ accepts."""

from __future__ import annotations

import pytest
from pamqp import commands

from amqprouter.protocol import (
    BrokerHandshake,
    ClientHandshake,
    ClientOpened,
    FrameError,
    PeerClosed,
    ProtocolError,
    TuneParams,
    UnexpectedFrame,
    constants,
)
from amqprouter.protocol.frames import Frame, FrameReader
from amqprouter.protocol.methods import close_frame, open_frame, peer_closed
from tests.protocol.helpers import START_OK, TUNE_OK, decode_all, method


def _frame_of(raw: bytes) -> Frame:
    reader = FrameReader(1 << 20)
    reader.feed(raw)
    frame = reader.next_frame()
    assert frame is not None
    return frame


@pytest.mark.parametrize("vhost", ["/", "/prod", "v" * 127, "v" * 128, "v" * 130, "v" * 255])
def test_open_frame_is_what_pamqp_writes_where_pamqp_writes_one(vhost: str) -> None:
    raw = open_frame(vhost)
    [decoded] = decode_all(raw)
    assert isinstance(decoded, commands.Connection.Open)
    assert decoded.virtual_host == vhost
    assert (decoded.capabilities, decoded.insist) == ("", False)
    if len(vhost) <= 127:
        assert raw == method(commands.Connection.Open(virtual_host=vhost))
    assert raw == (
        b"\x01\x00\x00"
        + (4 + 1 + len(vhost) + 2).to_bytes(4, "big")
        + b"\x00\x0a\x00\x28"
        + bytes((len(vhost),))
        + vhost.encode()
        + b"\x00\x00\xce"
    )


def test_pamqp_refuses_what_rabbitmq_accepts() -> None:
    # Why open_frame exists: RabbitMQ opens a 130-character vhost; pamqp will not write it.
    with pytest.raises(ValueError, match="Max length exceeded for virtual_host"):
        commands.Connection.Open(virtual_host="v" * 130)


@pytest.mark.parametrize("vhost", ["v" * 130, "é" * 127, "v" * 255])
def test_long_vhost_through_both_handshakes(vhost: str) -> None:
    client = ClientHandshake(TuneParams())
    client.receive_data(
        constants.PROTOCOL_HEADER + method(START_OK) + method(TUNE_OK) + open_frame(vhost)
    )
    opened = client.next_event()
    assert isinstance(opened, ClientOpened)
    assert opened.vhost == vhost
    broker = BrokerHandshake(
        vhost=opened.vhost,
        start_ok=opened.start_ok,
        client_tune=opened.tune,
        extra_client_properties={},
        backend="rabbit1",
    )
    sent = broker.data_to_send()
    assert sent.endswith(open_frame(vhost))


def test_a_vhost_no_short_string_holds_is_refused_with_a_reason() -> None:
    # Unreachable from a client (its Open carried a short string), but never a struct.error.
    with pytest.raises(ProtocolError) as caught:
        open_frame("é" * 128)
    assert caught.value.reply_code == constants.SYNTAX_ERROR
    assert str(caught.value) == "virtual host is 256 octets, over the 255 of an AMQP short string"


def test_close_frame_matches_pamqp_and_cuts_at_a_character() -> None:
    assert close_frame(530, "NOT_ALLOWED - vhost x", 10, 40) == method(
        commands.Connection.Close(
            reply_code=530, reply_text="NOT_ALLOWED - vhost x", class_id=10, method_id=40
        )
    )
    # 254 ASCII then a two-octet character: the character is dropped, not split.
    [close] = decode_all(close_frame(320, "x" * 254 + "é"))
    assert close.reply_text == "x" * 254


def test_peer_closed_keeps_a_text_that_is_not_utf8() -> None:
    raw = close_frame(403, "ACCESS_REFUSED - x")
    bad = raw.replace(b"ACCESS_REFUSED - x", b"ACCESS_REFUSED - \xff")
    frame = _frame_of(bad)
    assert peer_closed(frame) == PeerClosed(403, "ACCESS_REFUSED - \ufffd", 0, 0)


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_short_close_is_a_frame_error(cut: int) -> None:
    raw = close_frame(200, "bye")
    payload = raw[7:-1][: 4 + cut]
    short = b"\x01\x00\x00" + len(payload).to_bytes(4, "big") + payload + b"\xce"
    with pytest.raises(FrameError, match=r"Connection\.Close too short"):
        peer_closed(_frame_of(short))


def test_method_names_come_from_ids_alone() -> None:
    assert _frame_of(method(START_OK)).name == "Connection.StartOk"
    unknown = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x63\xce"
    assert _frame_of(unknown).name == "unknown method 10.99"
    assert _frame_of(b"\x08\x00\x00\x00\x00\x00\x00\xce").name == "frame type 8"


def test_broker_frame_in_the_wrong_state_is_not_decoded() -> None:
    # A Start whose server properties pamqp could not decode, sent where Open-Ok is due:
    # the error names it from its ids instead of decoding it.
    machine = BrokerHandshake(
        vhost="/",
        start_ok=_client_opened().start_ok,
        client_tune=TuneParams(),
        extra_client_properties={},
        backend="rabbit1",
    )
    start = method(commands.Connection.Start(server_properties={}))
    tune = method(commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
    hostile = b"\x00\x0a\x00\x0a\x00\x09" + b"\x00\x00\x00\x05" + b"\x01aZ\x00\x00"
    hostile_frame = b"\x01\x00\x00" + len(hostile).to_bytes(4, "big") + hostile + b"\xce"
    machine.receive_data(start + tune + hostile_frame)
    with pytest.raises(UnexpectedFrame) as caught:
        machine.next_event()
    assert str(caught.value) == (
        "broker rabbit1 sent Connection.Start while awaiting Connection.OpenOk"
    )


def _client_opened() -> ClientOpened:
    client = ClientHandshake(TuneParams())
    client.receive_data(
        constants.PROTOCOL_HEADER + method(START_OK) + method(TUNE_OK) + open_frame("/")
    )
    opened = client.next_event()
    assert isinstance(opened, ClientOpened)
    return opened
