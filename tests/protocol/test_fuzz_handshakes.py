"""Property tests of both handshake machines, driven as the session drives them.

The session (``net.transport.converse``) asks for an event, sends what the machine queued,
and feeds it the next read, until an event comes or a ProtocolError is raised. Here
the reads are hypothesis' pieces of random streams, and of valid handshakes with random
contents, heartbeats, an early Close, then random damage. The outcome is always one
of the machine's documented events, "need more data", or a ProtocolError, never
another exception; and it does not depend on how the stream was cut.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.protocol import (
    BadProtocolHeader,
    BrokerHandshake,
    BrokerOpened,
    ClientHandshake,
    ClientOpened,
    FrameError,
    NegotiationError,
    PeerClosed,
    ProtocolError,
    TuneParams,
    constants,
    properties,
)
from amqprouter.protocol.field_table import MAX_DEPTH
from amqprouter.protocol.methods import close_frame, open_frame
from tests.protocol.helpers import CLIENT_HANDSHAKE, HEARTBEAT, method
from tests.protocol.strategies import cuts, damaged, depth, frames, raw_frame, tables

OFFER = TuneParams()


@attrs.frozen
class Outcome:
    """What the session saw: an event, an error (type and text) or neither, all bytes
    sent, and, after an Opened event, the bytes forwarding starts from: the event's
    ``pending`` and whatever had not been read yet (the event itself is kept with
    ``pending`` empty, since where that split falls depends on the cuts)."""

    event: Any
    error: type[ProtocolError] | None
    text: str
    sent: bytes
    unread: bytes = b""


def converse(machine: ClientHandshake | BrokerHandshake, pieces: list[bytes]) -> Outcome:
    """``net.transport.converse`` without sockets; after an error, what was queued is sent too."""
    sent = bytearray()
    reads = iter(pieces)
    try:
        while True:
            event = machine.next_event()
            sent += machine.data_to_send()
            if event is not None:
                assert isinstance(event, ClientOpened | BrokerOpened | PeerClosed)
                if isinstance(event, PeerClosed):
                    return Outcome(event, None, "", bytes(sent))
                unread = event.pending + b"".join(reads)
                return Outcome(attrs.evolve(event, pending=b""), None, "", bytes(sent), unread)
            piece = next(reads, None)
            if piece is None:
                return Outcome(None, None, "", bytes(sent))
            machine.receive_data(piece)
    except ProtocolError as exc:
        sent += machine.data_to_send()
        return Outcome(None, type(exc), str(exc), bytes(sent))


def assert_same(whole: Outcome, chunked: Outcome, data: bytes) -> None:
    if whole.error is BadProtocolHeader:
        # The header is refused at the first byte that cannot belong to one, so the
        # bytes quoted depend on how many had arrived; the refusal does not.
        assert chunked.error is BadProtocolHeader
        assert chunked.sent == whole.sent == b""
        return
    assert chunked == whole


# -- the client side -------------------------------------------------------------------

client_streams = st.one_of(
    st.binary(max_size=120),
    st.lists(frames(), max_size=4).map(lambda parts: constants.PROTOCOL_HEADER + b"".join(parts)),
    st.just(CLIENT_HANDSHAKE).flatmap(damaged),
)


@given(client_streams, st.data())
def test_fuzz_client_handshake_any_bytes(data: bytes, draw: st.DataObject) -> None:
    whole = converse(ClientHandshake(OFFER), [data])
    chunked = converse(ClientHandshake(OFFER), draw.draw(cuts(data)))
    assert_same(whole, chunked, data)


vhosts = st.text(max_size=200).filter(lambda text: len(text.encode()) <= 255)
#: Tune's shorts (channel_max, heartbeat) and long (frame_max), edges first.
short_values = st.one_of(st.sampled_from([0, 1, 2047, 2048, 65535]), st.integers(0, 65535))
long_values = st.one_of(
    st.sampled_from([0, 1, 4095, 4096, 131072, 131073, 2**32 - 1]), st.integers(0, 2**32 - 1)
)


@attrs.frozen
class ClientScript:
    """A client's handshake with random contents; ``close_at`` ends it early with Close."""

    data: bytes
    client_properties: dict[str, Any]
    start_ok: bytes
    tune: tuple[int, int, int]
    vhost: str
    close_at: int | None
    close: PeerClosed


@st.composite
def client_scripts(draw: st.DrawFn) -> ClientScript:
    client_properties = draw(tables)
    start_ok = method(
        commands.Connection.StartOk(
            client_properties=client_properties,
            mechanism=draw(st.sampled_from(["PLAIN", "AMQPLAIN", "EXTERNAL"])),
            response=draw(st.text(max_size=40)),
            locale=draw(st.sampled_from(["en_US", ""])),
        )
    )
    channel_max = draw(short_values)
    frame_max = draw(long_values)
    heartbeat = draw(short_values)
    tune_ok = constants.FRAME_HEADER_STRUCT.pack(1, 0, 12) + (
        constants.METHOD_ID_STRUCT.pack(*constants.CONNECTION_TUNE_OK)
        + constants.TUNE_ARGUMENTS.pack(channel_max, frame_max, heartbeat)
        + b"\xce"
    )
    vhost = draw(vhosts)
    steps = [start_ok, tune_ok, open_frame(vhost)]
    close = PeerClosed(draw(st.integers(0, 65535)), draw(st.text(max_size=30)), 0, 0)
    close_at = draw(st.none() | st.integers(0, len(steps) - 1))
    if close_at is not None:
        steps[close_at:] = [
            close_frame(close.reply_code, close.reply_text, close.class_id, close.method_id)
        ]
    header = draw(st.sampled_from([constants.PROTOCOL_HEADER, constants.LEGACY_PROTOCOL_HEADER]))
    data = header + b"".join((HEARTBEAT if draw(st.booleans()) else b"") + step for step in steps)
    return ClientScript(
        data,
        client_properties,
        start_ok,
        (channel_max, frame_max, heartbeat),
        vhost,
        close_at,
        close,
    )


def expected_client_outcome(script: ClientScript) -> tuple[Any, type[ProtocolError] | None]:
    """An oracle written from the spec and the router's documented limits."""
    if script.close_at == 0:
        return script.close, None
    if len(script.start_ok) > constants.FRAME_MIN_SIZE:
        return None, FrameError
    if 1 + depth(script.client_properties) > MAX_DEPTH:
        return None, FrameError
    if script.close_at == 1:
        return script.close, None
    channel_max, frame_max, heartbeat = script.tune
    if (
        channel_max > OFFER.channel_max
        or frame_max > OFFER.frame_max
        or 0 < frame_max < constants.FRAME_MIN_SIZE
    ):
        return None, NegotiationError
    if script.close_at == 2:
        return script.close, None
    tune = TuneParams(channel_max or OFFER.channel_max, frame_max or OFFER.frame_max, heartbeat)
    return ("opened", script.vhost, tune), None


@given(client_scripts(), st.data())
def test_fuzz_client_handshake_valid_scripts(script: ClientScript, draw: st.DataObject) -> None:
    whole = converse(ClientHandshake(OFFER), [script.data])
    event, error = expected_client_outcome(script)
    assert whole.error is error, whole.text
    assert whole.sent.startswith(properties.START_FRAME)
    if isinstance(event, PeerClosed):
        # The text went out as a short string: cut to 255 octets at a character.
        cut = event.reply_text.encode()[:255].decode(errors="ignore")
        assert whole.event == attrs.evolve(event, reply_text=cut)
        assert whole.sent.endswith(method(commands.Connection.CloseOk()))
    elif event is not None:
        _opened, vhost, tune = event
        assert isinstance(whole.event, ClientOpened)
        assert (whole.event.vhost, whole.event.tune, whole.unread) == (vhost, tune, b"")
        assert whole.event.start_ok.raw == script.start_ok
        assert whole.event.start_ok.client_properties == script.client_properties
    assert converse(ClientHandshake(OFFER), draw.draw(cuts(script.data))) == whole


@given(client_scripts().flatmap(lambda script: damaged(script.data)), st.data())
def test_fuzz_client_handshake_damaged_scripts(data: bytes, draw: st.DataObject) -> None:
    whole = converse(ClientHandshake(OFFER), [data])
    chunked = converse(ClientHandshake(OFFER), draw.draw(cuts(data)))
    assert_same(whole, chunked, data)


# -- the broker side -------------------------------------------------------------------


def _opened_client() -> ClientOpened:
    machine = ClientHandshake(OFFER)
    machine.receive_data(CLIENT_HANDSHAKE)
    event = machine.next_event()
    assert isinstance(event, ClientOpened)
    return event


CLIENT = _opened_client()


def broker_machine() -> BrokerHandshake:
    return BrokerHandshake(
        vhost=CLIENT.vhost,
        start_ok=CLIENT.start_ok,
        client_tune=CLIENT.tune,
        extra_client_properties={"amqprouter_client": "10.0.0.7:51234"},
        backend="rabbit1",
    )


OPENING = broker_machine().data_to_send()
BROKER_HANDSHAKE = (
    method(commands.Connection.Start(server_properties={"product": "RabbitMQ"}))
    + method(commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
    + method(commands.Connection.OpenOk())
)

broker_streams = st.one_of(
    st.binary(max_size=120),
    st.lists(frames(), max_size=4).map(b"".join),
    st.just(BROKER_HANDSHAKE).flatmap(damaged),
)


@given(broker_streams, st.data())
def test_fuzz_broker_handshake_any_bytes(data: bytes, draw: st.DataObject) -> None:
    whole = converse(broker_machine(), [data])
    assert whole.sent.startswith(OPENING)
    assert converse(broker_machine(), draw.draw(cuts(data))) == whole


@attrs.frozen
class BrokerScript:
    data: bytes
    version: tuple[int, int]
    tune: tuple[int, int, int]
    secure: bool
    close_at: int | None
    close: PeerClosed
    open_ok: bytes


@st.composite
def broker_scripts(draw: st.DrawFn) -> BrokerScript:
    version = draw(st.sampled_from([(0, 9), (0, 8), (1, 0)]))
    # Server properties are never decoded by the router: any table, however deep.
    start = method(
        commands.Connection.Start(
            version_major=version[0],
            version_minor=version[1],
            server_properties=draw(tables),
            mechanisms="PLAIN AMQPLAIN",
            locales="en_US",
        )
    )
    tune = (draw(short_values), draw(long_values), draw(short_values))
    tune_frame = (
        constants.FRAME_HEADER_STRUCT.pack(1, 0, 12)
        + constants.METHOD_ID_STRUCT.pack(*constants.CONNECTION_TUNE)
        + constants.TUNE_ARGUMENTS.pack(*tune)
        + b"\xce"
    )
    secure = draw(st.booleans()) and draw(st.booleans())
    middle = method(commands.Connection.Secure(challenge="x")) if secure else tune_frame
    open_ok = method(commands.Connection.OpenOk())
    steps = [start, middle, open_ok]
    close = PeerClosed(draw(st.integers(0, 65535)), draw(st.text(max_size=30)), 10, 40)
    close_at = draw(st.none() | st.integers(0, len(steps) - 1))
    if close_at is not None:
        steps[close_at:] = [
            close_frame(close.reply_code, close.reply_text, close.class_id, close.method_id)
        ]
    data = b"".join((HEARTBEAT if draw(st.booleans()) else b"") + step for step in steps)
    return BrokerScript(data, version, tune, secure, close_at, close, open_ok)


def expected_broker_outcome(script: BrokerScript) -> tuple[Any, type[ProtocolError] | None, str]:
    if script.close_at == 0:
        return script.close, None, ""
    if script.version != (0, 9):
        return None, ProtocolError, "speaks AMQP"
    if script.close_at == 1:
        return script.close, None, ""
    if script.secure:
        return None, ProtocolError, "Connection.Secure"
    channel_max, frame_max, _heartbeat = script.tune
    if (channel_max and CLIENT.tune.channel_max > channel_max) or (
        frame_max and CLIENT.tune.frame_max > frame_max
    ):
        return None, NegotiationError, "NOT_ALLOWED"
    if script.close_at == 2:
        return script.close, None, ""
    return BrokerOpened(open_ok=script.open_ok, pending=b""), None, ""


@given(broker_scripts(), st.data())
def test_fuzz_broker_handshake_valid_scripts(script: BrokerScript, draw: st.DataObject) -> None:
    whole = converse(broker_machine(), [script.data])
    event, error, text = expected_broker_outcome(script)
    assert whole.error is error, whole.text
    assert text in whole.text
    if isinstance(event, PeerClosed):
        cut = event.reply_text.encode()[:255].decode(errors="ignore")
        assert whole.event == attrs.evolve(event, reply_text=cut)
        assert whole.sent == OPENING + method(commands.Connection.CloseOk())
    else:
        assert whole.event == event
        assert whole.sent == OPENING
        assert whole.unread == b""
    assert converse(broker_machine(), draw.draw(cuts(script.data))) == whole


@given(broker_scripts().flatmap(lambda script: damaged(script.data)), st.data())
def test_fuzz_broker_handshake_damaged_scripts(data: bytes, draw: st.DataObject) -> None:
    whole = converse(broker_machine(), [data])
    assert converse(broker_machine(), draw.draw(cuts(data))) == whole


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 488])
def test_deep_server_properties_are_not_decoded(levels: int) -> None:
    # The broker's Start is read from its fixed layout: its table is never decoded,
    # so a hostile broker's nesting costs nothing (a regression case for the fuzzers).
    value = b"A\x00\x00\x00\x00"
    for _ in range(levels - 2):
        value = b"A" + len(value).to_bytes(4, "big") + value
    table = b"\x04deep" + value
    arguments = (
        b"\x00\x09"
        + len(table).to_bytes(4, "big")
        + table
        + b"\x00\x00\x00\x05PLAIN"
        + b"\x00\x00\x00\x05en_US"
    )
    start = raw_frame(
        1, 0, constants.METHOD_ID_STRUCT.pack(*constants.CONNECTION_START) + arguments
    )
    assert len(start) > 5 * levels
    rest = BROKER_HANDSHAKE[
        len(method(commands.Connection.Start(server_properties={"product": "RabbitMQ"}))) :
    ]
    outcome = converse(broker_machine(), [start + rest])
    assert isinstance(outcome.event, BrokerOpened)
