"""Wire constants of AMQP 0.9.1 that the router relies on, and the reply codes it sends."""

from __future__ import annotations

import struct
from typing import Final

from pamqp import exceptions

#: The only protocol header we speak.
PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
#: The pre-0-9-1 header some old clients send; accepted as the reference does, since
#: the frames that follow are the same.
LEGACY_PROTOCOL_HEADER: Final = b"AMQP\x01\x01\x00\x09"
PROTOCOL_HEADER_SIZE: Final = 8

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
#: type (1) + channel (2) + size (4); the frame-end octet follows the payload.
FRAME_HEADER_SIZE: Final = 7
FRAME_OVERHEAD: Final = FRAME_HEADER_SIZE + 1
#: Before Tune neither peer may send a frame larger than this (AMQP 0.9.1 section 4.2.3).
FRAME_MIN_SIZE: Final = 4096

FRAME_HEADER_STRUCT: Final = struct.Struct(">BHI")
METHOD_ID_STRUCT: Final = struct.Struct(">HH")

# Arguments of the fixed-layout methods, read with struct instead of pamqp.
TUNE_ARGUMENTS: Final = struct.Struct(">HIH")  # channel_max, frame_max, heartbeat
VERSION_ARGUMENTS: Final = struct.Struct(">BB")  # Connection.Start version major, minor

# (class id, method id) of the handshake methods.
CONNECTION_START: Final = (10, 10)
CONNECTION_START_OK: Final = (10, 11)
CONNECTION_SECURE: Final = (10, 20)
CONNECTION_TUNE: Final = (10, 30)
CONNECTION_TUNE_OK: Final = (10, 31)
CONNECTION_OPEN: Final = (10, 40)
CONNECTION_OPEN_OK: Final = (10, 41)

# (class id, method id) of the channel-0 methods the router must understand while forwarding.
CONNECTION_CLOSE: Final = (10, 50)
CONNECTION_CLOSE_OK: Final = (10, 51)
CONNECTION_BLOCKED: Final = (10, 60)
CONNECTION_UNBLOCKED: Final = (10, 61)

# Reply codes, taken from pamqp so that a typo cannot invent a code.
REPLY_SUCCESS: Final = 200
CONNECTION_FORCED: Final = exceptions.AMQPConnectionForced.value  # 320
ACCESS_REFUSED: Final = exceptions.AMQPAccessRefused.value  # 403
FRAME_ERROR: Final = exceptions.AMQPFrameError.value  # 501
SYNTAX_ERROR: Final = exceptions.AMQPSyntaxError.value  # 502
COMMAND_INVALID: Final = exceptions.AMQPCommandInvalid.value  # 503
UNEXPECTED_FRAME: Final = exceptions.AMQPUnexpectedFrame.value  # 505
RESOURCE_ERROR: Final = exceptions.AMQPResourceError.value  # 506
NOT_ALLOWED: Final = exceptions.AMQPNotAllowed.value  # 530
NOT_IMPLEMENTED: Final = exceptions.AMQPNotImplemented.value  # 540
INTERNAL_ERROR: Final = exceptions.AMQPInternalError.value  # 541
