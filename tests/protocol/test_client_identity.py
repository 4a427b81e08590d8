"""What the router keeps of who a client is: product, version, platform and SASL user."""

from __future__ import annotations

import pytest
from pamqp import commands, frame

from amqprouter.protocol.client_identity import (
    MAX_LENGTH,
    ClientIdentity,
    bounded,
    identify,
    sasl_user,
)
from amqprouter.protocol.events import StartOkInfo


def _start_ok(properties: dict[str, object], mechanism: str, response: str) -> StartOkInfo:
    raw = frame.marshal(
        commands.Connection.StartOk(
            client_properties=properties,  # type: ignore[arg-type]
            mechanism=mechanism,
            response=response,
            locale="en_US",
        ),
        0,
    )
    return StartOkInfo(raw=raw, client_properties=properties, mechanism=mechanism)


def test_a_plain_client_is_known_by_its_properties_and_user() -> None:
    info = _start_ok(
        {"product": "Pika Python Client Library", "version": "1.3.2", "platform": "Python 3.11"},
        "PLAIN",
        "\x00alice\x00secret",
    )
    assert identify(info) == ClientIdentity(
        product="Pika Python Client Library",
        version="1.3.2",
        platform="Python 3.11",
        user="alice",
    )


def test_the_password_is_never_kept() -> None:
    identity = identify(_start_ok({}, "PLAIN", "\x00alice\x00secret"))
    assert "secret" not in repr(identity)


def test_an_amqplain_login_is_read_from_its_table() -> None:
    # py-amqp and Java's AMQPLAIN: the table's entries without its length prefix.
    table = b"\x05LOGINS\x00\x00\x00\x03bob\x08PASSWORDS\x00\x00\x00\x02pw"
    assert sasl_user("AMQPLAIN", table) == "bob"
    password_first = b"\x08PASSWORDS\x00\x00\x00\x02pw\x05LOGINS\x00\x00\x00\x03bob"
    assert sasl_user("AMQPLAIN", password_first) == "bob"


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        ("PLAIN", b"no-nul-at-all"),
        ("PLAIN", b"a\x00b\x00c\x00d"),
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x09bob"),  # value overruns
        ("AMQPLAIN", b"\x05LOGINt\x01"),  # not a long string
        ("AMQPLAIN", b"\x05LOG"),
        ("EXTERNAL", b""),
    ],
)
def test_a_response_that_does_not_parse_names_no_user(mechanism: str, response: bytes) -> None:
    assert sasl_user(mechanism, response) is None


def test_every_value_is_bounded_and_odd_types_are_left_out() -> None:
    long = "x" * 5000
    # As pamqp decodes them: a byte array ('x') as bytes, a number as int.
    properties = {"product": long, "version": 3, "platform": b"bytes\xff"}
    raw = _start_ok({}, "PLAIN", "\x00u\x00p").raw
    identity = identify(StartOkInfo(raw=raw, client_properties=properties, mechanism="PLAIN"))
    assert identity.product is not None and len(identity.product) == MAX_LENGTH
    assert identity.product.endswith("…")
    assert identity.version is None
    assert identity.platform == "bytes\ufffd"
    assert bounded("short") == "short" and bounded(None) is None
