"""What the router says about itself, and what it adds to the client's StartOk."""

from __future__ import annotations

import struct
from typing import Final

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


def splice_client_properties(start_ok_frame: bytes, extra: dict[str, str]) -> bytes:
    """Return the client's StartOk frame with ``extra`` appended to client_properties.

    The client's own table is kept byte for byte (re-encoding it with pamqp changes
    integer types and fails outright on byte-array values). Keys already present
    are appended again rather than replaced, as amqpprox does: RabbitMQ reads the
    first occurrence, so behind a chain of routers the outermost one, which saw the
    real client, wins.
    """
    header = constants.FRAME_HEADER_SIZE
    # payload: class id (2) + method id (2) + client_properties (4-byte length + table) + ...
    table_length_at = header + 4
    if len(start_ok_frame) < table_length_at + 4 + 1:
        raise FrameError("StartOk too short")
    (table_length,) = struct.unpack_from(">I", start_ok_frame, table_length_at)
    table_end = table_length_at + 4 + table_length
    if table_end > len(start_ok_frame) - 1:
        raise FrameError("StartOk client_properties overruns the frame")
    added = b"".join(_long_string_entry(key, value) for key, value in extra.items())
    payload = (
        start_ok_frame[header:table_length_at]
        + struct.pack(">I", table_length + len(added))
        + start_ok_frame[table_length_at + 4 : table_end]
        + added
        + start_ok_frame[table_end:-1]
    )
    return (
        constants.FRAME_HEADER_STRUCT.pack(constants.FRAME_METHOD, 0, len(payload))
        + payload
        + bytes((constants.FRAME_END,))
    )
