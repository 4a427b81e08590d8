"""Method frames the router writes or reads by hand instead of through pamqp.

pamqp validates on marshal with rules stricter than RabbitMQ's: ``Connection.Open``
refuses a virtual host over 127 characters (RabbitMQ takes any short string, 255
octets), and a reply text over 255 octets makes ``struct`` fail. The frames here are
built from their fixed layout, so they encode everything the wire can carry; the
only refusal is a string longer than a short string holds, as a ProtocolError.
Connection.Close is read the same way: it is decoded while forwarding, and a broker's
reply text that is not UTF-8 must not lose the close.
"""

from __future__ import annotations

import struct

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError, ProtocolError
from amqprouter.protocol.events import PeerClosed
from amqprouter.protocol.frames import Frame

_SHORT_STRING_MAX = 255
_ARGUMENTS_AT = constants.FRAME_HEADER_SIZE + 4


def method_frame(method_id: tuple[int, int], arguments: bytes, channel: int = 0) -> bytes:
    """One method frame: header, class and method ids, ``arguments``, frame end."""
    payload = constants.METHOD_ID_STRUCT.pack(*method_id) + arguments
    return (
        constants.FRAME_HEADER_STRUCT.pack(constants.FRAME_METHOD, channel, len(payload))
        + payload
        + bytes((constants.FRAME_END,))
    )


def short_string(text: str, what: str) -> bytes:
    """A short string; ProtocolError if ``text`` is over 255 octets in UTF-8."""
    encoded = text.encode()
    if len(encoded) > _SHORT_STRING_MAX:
        raise ProtocolError(
            f"{what} is {len(encoded)} octets, over the 255 of an AMQP short string",
            reply_code=constants.SYNTAX_ERROR,
        )
    return bytes((len(encoded),)) + encoded


def open_frame(vhost: str) -> bytes:
    """Connection.Open(virtual_host=vhost), capabilities empty, insist off."""
    return method_frame(
        constants.CONNECTION_OPEN, short_string(vhost, "virtual host") + b"\x00\x00"
    )


def close_frame(reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    """A Connection.Close frame; the text is cut to the 255 octets a short string holds."""
    text = reply_text.encode()[:_SHORT_STRING_MAX].decode(errors="ignore").encode()
    return method_frame(
        constants.CONNECTION_CLOSE,
        struct.pack(">H", reply_code)
        + bytes((len(text),))
        + text
        + struct.pack(">HH", class_id, method_id),
    )


def peer_closed(frame: Frame) -> PeerClosed:
    """Read a Connection.Close frame into the event the session acts on.

    A reply text that is not UTF-8 is kept with replacement characters: the close
    itself is what matters.
    """
    if frame.method_id != constants.CONNECTION_CLOSE:
        raise FrameError(f"FRAME_ERROR - expected Connection.Close, got {frame.name}")
    raw = frame.raw
    payload_end = len(raw) - 1
    at = _ARGUMENTS_AT
    if at + 3 > payload_end:
        raise FrameError("FRAME_ERROR - Connection.Close too short")
    (reply_code,) = struct.unpack_from(">H", raw, at)
    text_end = at + 3 + raw[at + 2]
    if text_end + 4 > payload_end:
        raise FrameError("FRAME_ERROR - Connection.Close too short")
    class_id, method_id = struct.unpack_from(">HH", raw, text_end)
    return PeerClosed(
        reply_code=reply_code,
        reply_text=raw[at + 3 : text_end].decode(errors="replace"),
        class_id=class_id,
        method_id=method_id,
    )
