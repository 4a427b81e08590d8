"""Client properties are checked before pamqp decodes them."""

from __future__ import annotations

import struct

import pytest
from pamqp import commands, frame

from amqprouter.protocol import ClientHandshake, FrameError, TuneParams, constants, properties
from amqprouter.protocol.close import close_frame
from amqprouter.protocol.field_table import MAX_DEPTH, check_field_table
from tests.protocol.helpers import method


def _long(value: int) -> bytes:
    return struct.pack(">I", value)


def _nested_arrays(levels: int) -> bytes:
    """``levels`` arrays, each holding the next; the innermost is empty."""
    value = b"A" + _long(0)
    for _ in range(levels - 1):
        value = b"A" + _long(len(value)) + value
    return value


def _start_ok(table_body: bytes) -> bytes:
    """A StartOk frame whose client properties are ``table_body``, written by hand."""
    payload = (
        struct.pack(">HH", 10, 11)
        + _long(len(table_body))
        + table_body
        + b"\x05PLAIN"
        + _long(12)
        + b"\x00guest\x00guest"
        + b"\x05en_US"
    )
    return b"\x01\x00\x00" + _long(len(payload)) + payload + b"\xce"


#: The audit's input: client properties {"a": 488 nested empty arrays}, 2,486 bytes.
DEEP_START_OK = _start_ok(b"\x01a" + _nested_arrays(488))
DEEP_TEXT = f"FRAME_ERROR - client properties nested deeper than {MAX_DEPTH} levels"


def test_the_audit_input_is_what_it_says() -> None:
    assert len(DEEP_START_OK) == 2486 < constants.FRAME_MIN_SIZE
    # This is what the router used to do with it: pamqp recurses until Python gives up.
    with pytest.raises(RecursionError):
        frame.unmarshal(DEEP_START_OK)


def test_deep_client_properties_get_a_close_not_a_crash() -> None:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + DEEP_START_OK)
    with pytest.raises(FrameError) as caught:
        machine.next_event()
    assert caught.value.reply_code == 501
    assert str(caught.value) == DEEP_TEXT
    # What the session sends: the Start queued before the error, then this Close.
    assert machine.data_to_send() == properties.START_FRAME
    text = DEEP_TEXT.encode()
    assert close_frame(caught.value.reply_code, caught.value.reply_text) == (
        b"\x01\x00\x00"
        + _long(4 + 2 + 1 + len(text) + 4)
        + b"\x00\x0a\x00\x32\x01\xf5"
        + bytes((len(text),))
        + text
        + b"\x00\x00\x00\x00\xce"
    )


@pytest.mark.parametrize("nesting", ["A", "F"])
def test_depth_limit_is_exact(nesting: str) -> None:
    def nested(levels: int) -> bytes:
        # The outermost client-properties table is level 1.
        value = (b"A" + _long(0)) if nesting == "A" else (b"F" + _long(0))
        for _ in range(levels - 2):
            inner = value if nesting == "A" else b"\x01k" + value
            value = nesting.encode() + _long(len(inner)) + inner
        return b"\x01a" + value

    at_limit = _start_ok(nested(MAX_DEPTH))
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + at_limit)
    assert machine.next_event() is None  # accepted: now awaiting TuneOk
    over = _start_ok(nested(MAX_DEPTH + 1))
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + over)
    with pytest.raises(FrameError, match="nested deeper than 16 levels"):
        machine.next_event()


def test_real_client_properties_pass_and_decode() -> None:
    start_ok = commands.Connection.StartOk(
        client_properties={
            "product": "pika",
            "capabilities": {"basic.nack": True, "connection.blocked": True},
            "numbers": [1, -2, 3.5, "four", {"five": [None, bytearray(b"six")]}],
        },
        response="\0guest\0guest",
    )
    raw = method(start_ok)
    end = check_field_table(raw, 11, len(raw) - 1, "client properties")
    (length,) = struct.unpack_from(">I", raw, 11)
    assert end == 11 + 4 + length
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + raw)
    assert machine.next_event() is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01a" + b"S" + _long(100) + b"abc", "a length overruns its table"),
        (b"\x01a" + b"x" + _long(5) + b"ab", "a length overruns its table"),
        (b"\x01a" + b"A" + _long(3) + b"t", "a length overruns its table"),
        (b"\x01a" + b"l" + b"\x00\x00", "a field overruns its table"),
        (b"\x05ab", "a field overruns its table"),  # the key runs past the table
        (b"\x01a", "a field overruns its table"),  # a key with no value
        (b"\x01a" + b"Z", "unknown field type b'Z'"),
        (b"\x01a" + b"U" + b"\x00\x01", "unknown field type b'U'"),  # pamqp has no 'U'
    ],
)
def test_malformed_tables_are_frame_errors(body: bytes, message: str) -> None:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + _start_ok(body))
    with pytest.raises(FrameError) as caught:
        machine.next_event()
    assert caught.value.reply_code == 501
    assert str(caught.value) == f"FRAME_ERROR - client properties: {message}"


def test_table_length_past_the_frame() -> None:
    raw = _start_ok(b"")
    # Claim a table of 1000 bytes in a frame that has 28 after the length.
    forged = raw[:11] + _long(1000) + raw[15:]
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + forged)
    with pytest.raises(FrameError, match="a length overruns its table"):
        machine.next_event()


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        # A key that is not UTF-8: pamqp raises UnicodeDecodeError.
        (b"\x02\xff\xfe" + b"V", "codec can't decode"),
        # A timestamp past year 9999: pamqp raises OverflowError or ValueError.
        (b"\x01t" + b"T" + b"\x7f" * 8, "cannot decode Connection.StartOk: year"),
    ],
)
def test_values_pamqp_cannot_decode_are_frame_errors(body: bytes, cause: str) -> None:
    machine = ClientHandshake(TuneParams())
    machine.receive_data(constants.PROTOCOL_HEADER + _start_ok(body))
    with pytest.raises(FrameError) as caught:
        machine.next_event()
    assert caught.value.reply_code == 501
    assert cause in str(caught.value)
