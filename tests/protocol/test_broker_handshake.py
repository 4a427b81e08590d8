from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands, frame

from amqprouter.protocol import (
    BrokerGreeted,
    BrokerGreeting,
    BrokerHandshake,
    BrokerOpened,
    BrokerState,
    ClientHandshake,
    ClientOpened,
    NegotiationError,
    PeerClosed,
    ProtocolError,
    TuneParams,
    constants,
    properties,
)
from tests.protocol.helpers import CLIENT_HANDSHAKE, START_OK, decode_all, feed_bytewise, method

EXTRA = {"amqprouter_client": "10.0.0.7:51234", "amqprouter_host": "(:5673) router1:40000"}
BROKER_START = commands.Connection.Start(
    server_properties={"product": "RabbitMQ"}, mechanisms="PLAIN AMQPLAIN", locales="en_US"
)
BROKER_TUNE = commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
OPEN_OK = method(commands.Connection.OpenOk())


def _opened_client() -> ClientOpened:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(CLIENT_HANDSHAKE)
    event = machine.next_event()
    assert isinstance(event, ClientOpened)
    return event


def _machine(client: ClientOpened | None = None, *, greeted: bool = False) -> BrokerHandshake:
    client = client or _opened_client()
    return BrokerHandshake(
        vhost=client.vhost,
        start_ok=client.start_ok,
        client_tune=client.tune,
        extra_client_properties=EXTRA,
        backend="rabbit1",
        greeted=greeted,
    )


def test_replay_byte_by_byte() -> None:
    machine = _machine()
    # Everything is pipelined: header, StartOk, TuneOk and Open before the broker speaks.
    opening = machine.data_to_send()
    assert opening.startswith(constants.PROTOCOL_HEADER)
    events, sent = feed_bytewise(machine, method(BROKER_START) + method(BROKER_TUNE) + OPEN_OK)
    assert events == [BrokerOpened(open_ok=OPEN_OK, pending=b"")]
    assert sent == b"", "nothing more is owed to a broker that accepts"
    start_ok, tune_ok, open_ = decode_all(opening[len(constants.PROTOCOL_HEADER) :])
    assert isinstance(start_ok, commands.Connection.StartOk)
    # The client's own properties, capabilities and connection_name kept, ours added last.
    expected = dict(START_OK.client_properties)
    expected.update(EXTRA)
    assert start_ok.client_properties == expected
    assert list(start_ok.client_properties)[-2:] == list(EXTRA)
    assert (start_ok.mechanism, start_ok.response, start_ok.locale) == (
        "PLAIN",
        "\0guest\0guest",
        "en_US",
    )
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (2047, 131072, 60)
    assert isinstance(open_, commands.Connection.Open)
    assert open_.virtual_host == "/prod"
    assert machine.state is BrokerState.OPENED


def test_client_table_bytes_are_kept_verbatim() -> None:
    # A byte-array value and a short int: pamqp cannot re-encode the first and would
    # widen the second; splicing keeps the client's bytes exactly.
    raw_table = b"\x04blobx\x00\x00\x00\x02\xff\x00\x05smalls\x00\x07"
    payload = (
        b"\x00\x0a\x00\x0b"
        + len(raw_table).to_bytes(4, "big")
        + raw_table
        + b"\x05PLAIN"
        + b"\x00\x00\x00\x02\x00x"
        + b"\x05en_US"
    )
    start_ok = constants.FRAME_HEADER_STRUCT.pack(1, 0, len(payload)) + payload + b"\xce"
    spliced = properties.splice_client_properties(start_ok, {"k": "v"})
    assert raw_table in spliced
    assert spliced.endswith(b"\x05PLAIN\x00\x00\x00\x02\x00x\x05en_US\xce")
    decoded: Any = frame.unmarshal(spliced)[2]
    assert decoded.client_properties["k"] == "v"


def test_broker_close_after_start_ok_is_relayed_event() -> None:
    machine = _machine()
    machine.data_to_send()
    refusal = commands.Connection.Close(
        reply_code=403, reply_text="ACCESS_REFUSED - Login was refused", class_id=0, method_id=0
    )
    events, sent = feed_bytewise(machine, method(BROKER_START) + method(refusal))
    assert events == [PeerClosed(403, "ACCESS_REFUSED - Login was refused", 0, 0)]
    assert sent.endswith(method(commands.Connection.CloseOk()))
    assert machine.state is BrokerState.CLOSED


def test_broker_close_after_open_is_relayed() -> None:
    # RabbitMQ refuses an unknown or forbidden vhost only after Open (amqpprox swallows it).
    machine = _machine()
    machine.data_to_send()
    refusal = commands.Connection.Close(
        reply_code=530, reply_text="NOT_ALLOWED - vhost /prod not found", class_id=10, method_id=40
    )
    events, _ = feed_bytewise(machine, method(BROKER_START) + method(BROKER_TUNE) + method(refusal))
    assert events == [PeerClosed(530, "NOT_ALLOWED - vhost /prod not found", 10, 40)]


def test_frames_after_open_ok_are_kept_in_order() -> None:
    machine = _machine()
    machine.data_to_send()
    blocked = method(commands.Connection.Blocked(reason="low on memory"))
    machine.receive_data(method(BROKER_START) + method(BROKER_TUNE) + OPEN_OK + blocked)
    assert machine.next_event() == BrokerOpened(open_ok=OPEN_OK, pending=blocked)


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        (
            commands.Connection.Tune(channel_max=100, frame_max=131072, heartbeat=60),
            "channel_max=100",
        ),
        (
            commands.Connection.Tune(channel_max=2047, frame_max=8192, heartbeat=60),
            "--frame-max 8192",
        ),
    ],
)
def test_broker_stricter_than_client_agreement_is_refused(
    tune: commands.Connection.Tune, message: str
) -> None:
    machine = _machine()
    machine.data_to_send()
    with pytest.raises(NegotiationError) as caught:
        feed_bytewise(machine, method(BROKER_START) + method(tune))
    assert caught.value.reply_code == 530
    assert message in str(caught.value)
    assert "rabbit1" in str(caught.value)


def test_broker_looser_than_client_agreement_gets_client_values() -> None:
    machine = _machine()
    opening = machine.data_to_send()
    loose = commands.Connection.Tune(channel_max=0, frame_max=0, heartbeat=0)
    events, sent = feed_bytewise(machine, method(BROKER_START) + method(loose) + OPEN_OK)
    assert events == [BrokerOpened(open_ok=OPEN_OK, pending=b"")]
    assert sent == b""
    _start_ok, tune_ok, _open = decode_all(opening[len(constants.PROTOCOL_HEADER) :])
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (2047, 131072, 60)
    assert machine.tune == TuneParams(2047, 131072, 60)


def test_connection_secure_is_refused_clearly() -> None:
    machine = _machine()
    machine.data_to_send()
    with pytest.raises(ProtocolError) as caught:
        feed_bytewise(
            machine, method(BROKER_START) + method(commands.Connection.Secure(challenge="x"))
        )
    assert caught.value.reply_code == 540


def test_wrong_version_refused() -> None:
    machine = _machine()
    machine.data_to_send()
    start = commands.Connection.Start(version_major=0, version_minor=8)
    with pytest.raises(ProtocolError):
        feed_bytewise(machine, method(start))


def test_start_ok_near_the_pre_tune_limit_goes_unchanged() -> None:
    # RabbitMQ accepts a StartOk of up to 4096 bytes; the router's additions must not
    # push one past that (RabbitMQ resets the connection then).
    pad = "x" * (constants.FRAME_MIN_SIZE - len(method(START_OK)) - 20)
    big = commands.Connection.StartOk(
        client_properties={**START_OK.client_properties, "pad": pad},
        mechanism="PLAIN",
        response="\0guest\0guest",
        locale="en_US",
    )
    assert constants.FRAME_MIN_SIZE - 100 < len(method(big)) <= constants.FRAME_MIN_SIZE
    client = ClientHandshake(TuneParams())
    client.receive_data(
        constants.PROTOCOL_HEADER
        + method(big)
        + CLIENT_HANDSHAKE[len(constants.PROTOCOL_HEADER) + len(method(START_OK)) :]
    )
    opened = client.next_event()
    assert isinstance(opened, ClientOpened)
    machine = _machine(opened)
    assert not machine.properties_added
    opening = machine.data_to_send()
    assert opening[len(constants.PROTOCOL_HEADER) :].startswith(method(big))
    # An ordinary StartOk gets them.
    assert _machine().properties_added


# -- primed connections: the greeting ahead of time, then the rest ---------------------


def test_greeting_sends_the_header_and_reads_start() -> None:
    greeting = BrokerGreeting("rabbit1")
    assert greeting.data_to_send() == constants.PROTOCOL_HEADER
    events, sent = feed_bytewise(greeting, method(BROKER_START))
    assert events == [BrokerGreeted(pending=0)]
    assert sent == b""


def test_greeting_reports_bytes_after_start() -> None:
    greeting = BrokerGreeting("rabbit1")
    greeting.receive_data(method(BROKER_START) + method(BROKER_TUNE))
    assert greeting.next_event() == BrokerGreeted(pending=len(method(BROKER_TUNE)))


@pytest.mark.parametrize(
    "reply",
    [
        b"AMQP\x00\x00\x09\x01",  # a broker of another protocol version answers its header
        method(commands.Connection.Start(version_major=0, version_minor=8)),
        method(BROKER_TUNE),  # not a Start
    ],
)
def test_greeting_refuses_what_is_not_a_0_9_1_start(reply: bytes) -> None:
    greeting = BrokerGreeting("rabbit1")
    greeting.data_to_send()
    with pytest.raises(ProtocolError):
        feed_bytewise(greeting, reply)


def test_greeting_answers_a_broker_close() -> None:
    greeting = BrokerGreeting("rabbit1")
    greeting.data_to_send()
    close = commands.Connection.Close(320, "CONNECTION_FORCED - shutdown", 0, 0)
    events, sent = feed_bytewise(greeting, method(close))
    assert events == [PeerClosed(320, "CONNECTION_FORCED - shutdown")]
    assert sent == method(commands.Connection.CloseOk())


def test_greeted_handshake_starts_at_tune_without_the_header() -> None:
    client = _opened_client()
    greeted = _machine(client, greeted=True)
    assert greeted.state is BrokerState.AWAITING_TUNE
    opening = greeted.data_to_send()
    # The same StartOk, TuneOk and Open as an unprimed replay, minus the header.
    assert opening == _machine(client).data_to_send()[len(constants.PROTOCOL_HEADER) :]
    events, _ = feed_bytewise(greeted, method(BROKER_TUNE) + OPEN_OK)
    assert events == [BrokerOpened(open_ok=OPEN_OK, pending=b"")]
    # A second Start on a primed connection is a broker fault, not a restart.
    again = _machine(client, greeted=True)
    with pytest.raises(ProtocolError):
        feed_bytewise(again, method(BROKER_START))
