"""What the router says about itself, and what it adds to the client's StartOk."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from pamqp import commands, frame

from amqprouter import __version__
from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError

#: The capabilities amqpprox advertises, in its order. The router forwards frames
#: unchanged, so a capability is honest exactly when the broker behind it has it;
#: RabbitMQ has had all of these since 3.x.
CAPABILITIES: Final = (
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
)
#: PLAIN as amqpprox offers, plus AMQPLAIN as RabbitMQ does: the router passes the
#: client's choice on to the broker, which decides.
MECHANISMS: Final = "PLAIN AMQPLAIN"
LOCALES: Final = "en_US"


def server_properties() -> dict[str, object]:
    return {
        "capabilities": dict.fromkeys(CAPABILITIES, True),
        "cluster_name": "amqprouter",
        "copyright": "Copyright (C) the amqprouter authors",
        "information": "AMQP 0.9.1 router; see https://www.rabbitmq.com for the broker behind it",
        "platform": "Python/trio",
        "product": "amqprouter",
        "version": __version__,
    }


def connection_start() -> commands.Connection.Start:
    return commands.Connection.Start(
        version_major=0,
        version_minor=9,
        server_properties=server_properties(),  # type: ignore[arg-type]
        mechanisms=MECHANISMS,
        locales=LOCALES,
    )


#: Connection.Start is the same for every client: encode it once.
START_FRAME: Final = frame.marshal(connection_start(), 0)


def _long_string_entry(key: str, value: str) -> bytes:
    key_bytes = key.encode()
    value_bytes = value.encode()
    return (
        struct.pack(">B", len(key_bytes))
        + key_bytes
        + b"S"
        + struct.pack(">I", len(value_bytes))
        + value_bytes
    )


def _start_ok_fields(start_ok_frame: bytes) -> tuple[int, int, int]:
    """Where the client_properties table ends, the response ends and the frame payload
    ends, checked against the frame: (table_end, response_end, payload_end).

    The StartOk payload is class id (2), method id (2), client_properties (4-byte
    length + table), mechanism (short string), response (long string), locale (short
    string).
    """
    header = constants.FRAME_HEADER_SIZE
    payload_end = len(start_ok_frame) - 1
    table_length_at = header + 4
    if payload_end < table_length_at + 4:
        raise FrameError("StartOk too short")
    (table_length,) = struct.unpack_from(">I", start_ok_frame, table_length_at)
    table_end = table_length_at + 4 + table_length
    if table_end >= payload_end:
        raise FrameError("StartOk client_properties overruns the frame")
    mechanism_end = table_end + 1 + start_ok_frame[table_end]
    if mechanism_end + 4 > payload_end:
        raise FrameError("StartOk mechanism overruns the frame")
    (response_length,) = struct.unpack_from(">I", start_ok_frame, mechanism_end)
    response_end = mechanism_end + 4 + response_length
    if response_end >= payload_end:
        raise FrameError("StartOk response overruns the frame")
    return table_end, response_end, payload_end


def plain_mechanism(start_ok_frame: bytes) -> str | None:
    """The StartOk's mechanism when everything after its client properties is as pamqp
    decodes without error (mechanism, response and locale within the frame, mechanism
    and locale ASCII), else None: the caller decodes it with pamqp then, for pamqp's
    verdict on it."""
    try:
        table_end, response_end, payload_end = _start_ok_fields(start_ok_frame)
    except FrameError:
        return None
    locale_end = response_end + 1 + start_ok_frame[response_end]
    mechanism = start_ok_frame[table_end + 1 : table_end + 1 + start_ok_frame[table_end]]
    locale = start_ok_frame[response_end + 1 : locale_end]
    if locale_end > payload_end or not (mechanism.isascii() and locale.isascii()):
        return None
    return mechanism.decode()


def start_ok_sasl(start_ok_frame: bytes) -> tuple[str, bytes]:
    """The client's SASL mechanism and response (credentials), read from its StartOk."""
    table_end, response_end, _ = _start_ok_fields(start_ok_frame)
    mechanism_end = table_end + 1 + start_ok_frame[table_end]
    mechanism = start_ok_frame[table_end + 1 : mechanism_end].decode("utf-8", "replace")
    return mechanism, start_ok_frame[mechanism_end + 4 : response_end]


def splice_client_properties(
    start_ok_frame: bytes, extra: dict[str, str], sasl: tuple[str, bytes] | None = None
) -> bytes:
    """Return the client's StartOk frame with ``extra`` appended to client_properties,
    and its mechanism and response replaced by ``sasl`` when given (the auth service's).

    The client's own table is kept byte for byte (re-encoding it with pamqp changes
    integer types and fails outright on byte-array values), and so is its locale. Keys
    already present are appended again rather than replaced, as amqpprox does:
    RabbitMQ reads the first occurrence, so behind a chain of routers the outermost
    one, which saw the real client, wins.

    Raises:
        FrameError: the frame's fields overrun it, or ``sasl``'s mechanism is over 255
            bytes (it is a short string).
    """
    header = constants.FRAME_HEADER_SIZE
    table_length_at = header + 4
    table_end, response_end, payload_end = _start_ok_fields(start_ok_frame)
    (table_length,) = struct.unpack_from(">I", start_ok_frame, table_length_at)
    added = b"".join(_long_string_entry(key, value) for key, value in extra.items())
    if sasl is None:
        credentials = start_ok_frame[table_end:response_end]
    else:
        mechanism = sasl[0].encode()
        if len(mechanism) > 255:
            raise FrameError("SASL mechanism longer than a short string")
        credentials = (
            struct.pack(">B", len(mechanism))
            + mechanism
            + struct.pack(">I", len(sasl[1]))
            + sasl[1]
        )
    payload = (
        start_ok_frame[header:table_length_at]
        + struct.pack(">I", table_length + len(added))
        + start_ok_frame[table_length_at + 4 : table_end]
        + added
        + credentials
        + start_ok_frame[response_end:payload_end]
    )
    return (
        constants.FRAME_HEADER_STRUCT.pack(constants.FRAME_METHOD, 0, len(payload))
        + payload
        + bytes((constants.FRAME_END,))
    )


def has_capability(client_properties: Mapping[str, Any], name: str) -> bool:
    """Whether the client advertised capability ``name`` (true) in its StartOk."""
    capabilities = client_properties.get("capabilities")
    return isinstance(capabilities, Mapping) and capabilities.get(name) is True
