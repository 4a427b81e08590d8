"""What a frame trace says about frames: whole frames in, one record per frame out.

Sans-IO: the caller (session/trace.py) hands the bytes of whole frames one direction
forwarded, and gets back a ``FrameRecord`` each: channel, frame type, size, and

* for a method frame, its name from pamqp's table of methods (``Basic.Publish``) and,
  of its arguments, only the names that say where a message goes: exchange, routing
  key, queue (and Exchange.Bind's source and destination, which are exchanges). Only
  methods that have such an argument are decoded at all; every other method, and so
  Connection.StartOk, SecureOk and UpdateSecret with their credentials, is named from
  its class and method ids alone, its arguments never read;
* for a content header, the body size and the NAMES of the properties set (from the
  property flags, without decoding a value: a header table may be large or hostile);
* for a body frame, nothing of the body unless ``bodies`` asks for its first bytes.

A method that fails to decode (a malformed frame forwarded as it came, or one pamqp
refuses; STYLE.md section 4) is still described: its name, and ``error`` saying why
its arguments are missing. ``redacted`` rewrites the frames that carry credentials
for a capture, which holds whole frames (session/capture.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

import attrs
from pamqp import commands, frame

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError
from amqprouter.protocol.frames import Frame, method_name

#: The frame types by number, as a trace names them.
FRAME_TYPES: Final = {
    constants.FRAME_METHOD: "method",
    constants.FRAME_HEADER: "header",
    constants.FRAME_BODY: "body",
    constants.FRAME_HEARTBEAT: "heartbeat",
}
#: The method arguments a trace shows (pamqp's attribute names, in this order): where a
#: message goes, never what it says or who sent it.
SHOWN_ARGUMENTS: Final = ("exchange", "source", "destination", "routing_key", "queue")
#: The methods worth decoding: those that have an argument a trace shows. Keyed as
#: pamqp's ``INDEX_MAPPING`` is (class id << 16 | method id).
_DECODED: Final = frozenset(
    index
    for index, method in commands.INDEX_MAPPING.items()
    if set(method.__slots__) & set(SHOWN_ARGUMENTS)  # type: ignore[attr-defined]
)
#: Basic's property flags, highest bit first, by pamqp's names (``message_type`` is the
#: wire's ``type``).
PROPERTY_FLAGS: Final = tuple(commands.Basic.Properties.flags.items())
#: A content header: class id, weight, body size, property flags.
_CONTENT_HEADER: Final = struct.Struct(">HHQH")
_HEADER: Final = constants.FRAME_HEADER_STRUCT
_OVERHEAD: Final = constants.FRAME_OVERHEAD

# The methods that carry credentials, and what a capture holds of them instead.
_START_OK: Final = (10 << 16) | 11
_SECURE_OK: Final = (10 << 16) | 21
_UPDATE_SECRET: Final = (10 << 16) | 70
REDACTED: Final = "<redacted by amqprouter>"


@attrs.frozen
class FrameRecord:
    """One frame as a trace shows it. ``size`` is the whole frame's, header and end
    octet included; ``payload`` its payload's."""

    channel: int
    frame_type: str
    size: int
    payload: int
    #: A method frame's ``Class.Method``, else None.
    method: str | None = None
    #: The shown arguments a method has, (name, value), in ``SHOWN_ARGUMENTS`` order.
    arguments: tuple[tuple[str, str], ...] = ()
    #: A content header's body size and the names of the properties it sets.
    body_size: int | None = None
    properties: tuple[str, ...] = ()
    #: A body frame's first bytes (``BODIES n``), else None.
    body: bytes | None = None
    #: Why a method's arguments or a header's properties could not be read.
    error: str | None = None


def frames_in(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, channel, start, end) of each whole frame in ``data``, which holds whole
    frames only (what ``FrameScanner`` forwards); a truncated tail is ignored."""
    position, length = 0, len(data)
    while length - position >= constants.FRAME_HEADER_SIZE:
        frame_type, channel, size = _HEADER.unpack_from(data, position)
        end = position + size + _OVERHEAD
        if end > length:
            return
        yield frame_type, channel, position, end
        position = end


def count_frames(data: bytes) -> int:
    """How many whole frames ``data`` holds (headers read, nothing decoded)."""
    return sum(1 for _ in frames_in(data))


def describe(data: bytes, *, bodies: int = 0) -> list[FrameRecord]:
    """One record per whole frame of ``data``; ``bodies`` > 0 keeps that many first
    bytes of each body frame."""
    return [
        describe_frame(data[start:end], frame_type, channel, bodies=bodies)
        for frame_type, channel, start, end in frames_in(data)
    ]


def describe_frame(raw: bytes, frame_type: int, channel: int, *, bodies: int = 0) -> FrameRecord:
    """The record of one whole frame ``raw`` (header and end octet included)."""
    size = len(raw)
    payload = size - _OVERHEAD
    kind = FRAME_TYPES.get(frame_type, f"type {frame_type}")
    if frame_type == constants.FRAME_METHOD:
        return _method(raw, channel, size, payload)
    if frame_type == constants.FRAME_HEADER:
        return _content_header(raw, channel, size, payload)
    if frame_type == constants.FRAME_BODY and bodies > 0:
        start = constants.FRAME_HEADER_SIZE
        return FrameRecord(
            channel, kind, size, payload, body=bytes(raw[start : start + min(bodies, payload)])
        )
    return FrameRecord(channel, kind, size, payload)


def _method(raw: bytes, channel: int, size: int, payload: int) -> FrameRecord:
    if payload < 4:
        return FrameRecord(channel, "method", size, payload, error="method frame too short")
    class_id, method_id = constants.METHOD_ID_STRUCT.unpack_from(raw, constants.FRAME_HEADER_SIZE)
    name = method_name((class_id, method_id))
    if (class_id << 16) | method_id not in _DECODED:
        return FrameRecord(channel, "method", size, payload, method=name)
    try:
        method = Frame(constants.FRAME_METHOD, channel, bytes(raw)).decode()
    except FrameError as exc:
        return FrameRecord(channel, "method", size, payload, method=name, error=exc.reply_text)
    arguments = tuple(
        (argument, _text(getattr(method, argument)))
        for argument in SHOWN_ARGUMENTS
        if argument in method.__slots__
    )
    return FrameRecord(channel, "method", size, payload, method=name, arguments=arguments)


def _text(value: object) -> str:
    """A shortstr as text (pamqp gives str; bytes only for what is not UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _content_header(raw: bytes, channel: int, size: int, payload: int) -> FrameRecord:
    try:
        _class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(
            raw, constants.FRAME_HEADER_SIZE
        )
    except struct.error:
        return FrameRecord(channel, "header", size, payload, error="content header too short")
    names = tuple(name for name, bit in PROPERTY_FLAGS if flags & bit)
    return FrameRecord(channel, "header", size, payload, body_size=body_size, properties=names)


def redacted(raw: bytes) -> bytes:
    """``raw`` (one whole frame) as a capture may hold it: Connection.StartOk and
    SecureOk without their response, UpdateSecret without its secret (each
    re-encoded, so the frame stays one a dissector reads); any other frame as it is."""
    if len(raw) < 12 or raw[0] != constants.FRAME_METHOD:
        return raw
    class_id, method_id = constants.METHOD_ID_STRUCT.unpack_from(raw, constants.FRAME_HEADER_SIZE)
    index = (class_id << 16) | method_id
    if index not in (_START_OK, _SECURE_OK, _UPDATE_SECRET):
        return raw
    channel = _HEADER.unpack_from(raw, 0)[1]
    replacement: (
        commands.Connection.StartOk
        | commands.Connection.SecureOk
        | commands.Connection.UpdateSecret
    )
    if index == _SECURE_OK:
        replacement = commands.Connection.SecureOk(response=REDACTED)
    elif index == _UPDATE_SECRET:
        replacement = commands.Connection.UpdateSecret(new_secret=REDACTED, reason="")
    else:
        replacement = _start_ok_without_response(raw)
    return frame.marshal(replacement, channel)


def _start_ok_without_response(raw: bytes) -> commands.Connection.StartOk:
    """The client's StartOk, its response replaced; its properties dropped too when
    they do not decode (the credentials must go whatever the rest holds)."""
    try:
        start_ok = Frame(constants.FRAME_METHOD, 0, bytes(raw)).decode()
    except FrameError:
        return commands.Connection.StartOk(response=REDACTED)
    if not isinstance(start_ok, commands.Connection.StartOk):  # pragma: no cover - by its ids
        return commands.Connection.StartOk(response=REDACTED)
    try:
        rebuilt = commands.Connection.StartOk(
            client_properties=start_ok.client_properties,
            mechanism=start_ok.mechanism,
            response=REDACTED,
            locale=start_ok.locale,
        )
        frame.marshal(rebuilt, 0)  # marshalling validates: a property pamqp refuses
    except Exception:
        return commands.Connection.StartOk(
            mechanism=start_ok.mechanism, response=REDACTED, locale=start_ok.locale
        )
    return rebuilt
