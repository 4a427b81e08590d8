"""Who a client says it is: its library, version, platform and SASL user, from StartOk.

The operator's question "who is this client?" (CONN, the status page) is answered from
what the client sent in Connection.StartOk: the ``product``, ``version`` and
``platform`` client properties every AMQP library fills in, and the user name of its
PLAIN or AMQPLAIN response. The session keeps this small record for its whole life, so
each value is cut to ``MAX_LENGTH`` characters: thousands of sessions, and a client
could send kilobytes. Nothing else of the response is kept: never the password.

The values are the client's own words, kept raw; whoever shows them escapes them
(``amqprouter.text.escape``), as they do a vhost.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import attrs

from amqprouter.protocol.errors import FrameError
from amqprouter.protocol.events import StartOkInfo
from amqprouter.protocol.properties import start_ok_sasl

#: The most characters kept of each value; a longer one ends with ``…``.
MAX_LENGTH: Final = 64


@attrs.frozen(slots=True)
class ClientIdentity:
    """What the client said about itself; None where it said nothing usable."""

    product: str | None = None
    version: str | None = None
    platform: str | None = None
    user: str | None = None


#: A client that said nothing (the handshake is not over yet, or it sent no properties).
UNKNOWN: Final = ClientIdentity()


def bounded(value: str | None) -> str | None:
    """``value`` cut to ``MAX_LENGTH`` characters (the last one ``…`` when cut)."""
    if value is None or len(value) <= MAX_LENGTH:
        return value
    return value[: MAX_LENGTH - 1] + "…"


def _text(value: Any) -> str | None:
    # pamqp decodes a long string as str; a byte array ('x') as bytes.
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, bytes | bytearray):
        return bounded(bytes(value).decode("utf-8", "replace"))
    return None


def identify(start_ok: StartOkInfo) -> ClientIdentity:
    """The identity ``start_ok`` tells; a malformed part is just left out."""
    properties: Mapping[str, Any] = start_ok.client_properties
    try:
        mechanism, response = start_ok_sasl(start_ok.raw)
    except FrameError:
        user = None
    else:
        user = sasl_user(mechanism, response)
    return ClientIdentity(
        product=_text(properties.get("product")),
        version=_text(properties.get("version")),
        platform=_text(properties.get("platform")),
        user=bounded(user),
    )


def sasl_user(mechanism: str, response: bytes) -> str | None:
    """The user name in a PLAIN or AMQPLAIN response, or None (other mechanisms, or a
    response that does not parse)."""
    if mechanism == "PLAIN":
        # RFC 4616: [authzid] NUL authcid NUL passwd.
        parts = response.split(b"\x00")
        return parts[1].decode("utf-8", "replace") if len(parts) == 3 else None
    if mechanism == "AMQPLAIN":
        return _amqplain_login(response)
    return None


def _amqplain_login(response: bytes) -> str | None:
    """LOGIN of an AMQPLAIN response: a field table's entries without its length.

    Only long-string entries are walked (LOGIN and PASSWORD are long strings in every
    client); anything else ends the search.
    """
    at = 0
    try:
        while at < len(response):
            key_length = response[at]
            key = response[at + 1 : at + 1 + key_length]
            at += 1 + key_length
            if response[at : at + 1] != b"S":
                return None
            (length,) = struct.unpack_from(">I", response, at + 1)
            value = response[at + 5 : at + 5 + length]
            if len(value) != length:
                return None
            at += 5 + length
            if key == b"LOGIN":
                return value.decode("utf-8", "replace")
    except (IndexError, struct.error):
        return None
    return None
