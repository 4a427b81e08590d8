"""The StartOk rewrite for the auth service: SASL read and replaced, the rest kept."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame

from amqprouter.protocol import BrokerHandshake, FrameError, ProtocolError, constants, properties
from tests.protocol.helpers import START_OK, decode_all, method
from tests.protocol.test_broker_handshake import _opened_client

RAW_TABLE = b"\x04blobx\x00\x00\x00\x02\xff\x00\x05smalls\x00\x07"


def _start_ok(
    table: bytes = RAW_TABLE, mechanism: bytes = b"PLAIN", response: bytes = b"\0u\0p"
) -> bytes:
    payload = (
        b"\x00\x0a\x00\x0b"
        + len(table).to_bytes(4, "big")
        + table
        + bytes((len(mechanism),))
        + mechanism
        + len(response).to_bytes(4, "big")
        + response
        + b"\x05en_US"
    )
    return constants.FRAME_HEADER_STRUCT.pack(1, 0, len(payload)) + payload + b"\xce"


def test_sasl_is_read_from_the_start_ok() -> None:
    assert properties.start_ok_sasl(_start_ok()) == ("PLAIN", b"\0u\0p")
    assert properties.start_ok_sasl(method(START_OK)) == ("PLAIN", b"\0guest\0guest")


def test_sasl_replaced_table_and_locale_kept_verbatim() -> None:
    spliced = properties.splice_client_properties(
        _start_ok(), {"k": "v"}, ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x05guest")
    )
    assert RAW_TABLE in spliced
    assert properties.start_ok_sasl(spliced) == ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x05guest")
    assert spliced.endswith(b"\x05en_US\xce")
    decoded: Any = frame.unmarshal(spliced)[2]
    assert decoded.client_properties["k"] == "v"
    assert decoded.mechanism == "AMQPLAIN"
    assert decoded.locale == "en_US"


def test_without_sasl_the_credentials_are_the_clients() -> None:
    raw = _start_ok()
    assert properties.start_ok_sasl(properties.splice_client_properties(raw, {})) == (
        "PLAIN",
        b"\0u\0p",
    )
    assert properties.splice_client_properties(raw, {}) == raw


@given(
    mechanism=st.text(max_size=140),
    response=st.binary(max_size=300),
    old=st.binary(max_size=50),
)
def test_any_sasl_round_trips(mechanism: str, response: bytes, old: bytes) -> None:
    if len(mechanism.encode()) > 255:
        with pytest.raises(FrameError):
            properties.splice_client_properties(_start_ok(response=old), {}, (mechanism, response))
        return
    spliced = properties.splice_client_properties(
        _start_ok(response=old), {}, (mechanism, response)
    )
    assert properties.start_ok_sasl(spliced) == (mechanism, response)
    assert RAW_TABLE in spliced


@pytest.mark.parametrize("cut", [9, 14, 40, 47, 50])
def test_truncated_start_ok_is_a_frame_error(cut: int) -> None:
    raw = _start_ok()
    # The length fields stay, the bytes they promise do not.
    broken = raw[:cut] + b"\xce"
    with pytest.raises(FrameError):
        properties.start_ok_sasl(broken)


def test_broker_handshake_sends_the_new_credentials() -> None:
    client = _opened_client()
    machine = BrokerHandshake(
        vhost=client.vhost,
        start_ok=client.start_ok,
        client_tune=client.tune,
        extra_client_properties={"amqprouter_auth": "rewritten"},
        backend="rabbit1",
        sasl=("PLAIN", b"\0guest\0guest"),
    )
    opening = machine.data_to_send()
    start_ok, _tune_ok, _open = decode_all(opening[len(constants.PROTOCOL_HEADER) :])
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.response == "\0guest\0guest"
    assert start_ok.client_properties["amqprouter_auth"] == "rewritten"
    assert (
        start_ok.client_properties["connection_name"]
        == START_OK.client_properties["connection_name"]
    )


def test_capability_is_read_from_client_properties() -> None:
    assert properties.has_capability(
        {"capabilities": {"authentication_failure_close": True}}, "authentication_failure_close"
    )
    assert not properties.has_capability({"capabilities": {}}, "authentication_failure_close")
    assert not properties.has_capability(
        {"capabilities": {"authentication_failure_close": 1}}, "authentication_failure_close"
    )
    assert not properties.has_capability({"capabilities": "x"}, "authentication_failure_close")
    assert not properties.has_capability({}, "authentication_failure_close")


def _machine_for(start_ok_frame: bytes, sasl: tuple[str, bytes]) -> BrokerHandshake:
    client = _opened_client()
    start_ok = attrs.evolve(client.start_ok, raw=start_ok_frame)
    return BrokerHandshake(
        vhost=client.vhost,
        start_ok=start_ok,
        client_tune=client.tune,
        extra_client_properties={"amqprouter_client": "10.0.0.7:51234"},
        backend="rabbit1",
        sasl=sasl,
    )


def test_credentials_go_even_when_the_properties_do_not_fit() -> None:
    # A table that leaves room for the new credentials, not for the router's property.
    table = b"\x03bigS" + (4040).to_bytes(4, "big") + b"x" * 4040
    machine = _machine_for(_start_ok(table=table), ("PLAIN", b"\0guest\0guest"))
    assert not machine.properties_added
    opening = machine.data_to_send()
    start_ok, _tune_ok, _open = decode_all(opening[len(constants.PROTOCOL_HEADER) :])
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.response == "\0guest\0guest"
    assert "amqprouter_client" not in start_ok.client_properties


def test_credentials_that_do_not_fit_before_tune_are_refused() -> None:
    with pytest.raises(ProtocolError, match="over 4096 bytes"):
        _machine_for(_start_ok(), ("PLAIN", b"x" * 5000))
