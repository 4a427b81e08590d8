"""Framing: a frame reader for the handshake and a frame scanner for forwarding.

Both parse the 7-byte frame header themselves instead of asking pamqp, because
pamqp's ``frame.unmarshal`` raises on incomplete input without saying so, never
checks a heartbeat's frame-end octet and happily waits for the 1.2 GB "frame"
that ``GET / HTTP/1.1`` parses as (see STYLE.md section 4.3). pamqp decodes only
a frame we already know to be whole and well formed.
"""

from __future__ import annotations

from typing import Final

import attrs
from pamqp import base, frame
from pamqp import exceptions as pamqp_exceptions

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError

_unpack_header = constants.FRAME_HEADER_STRUCT.unpack_from
_unpack_method_id = constants.METHOD_ID_STRUCT.unpack_from
_VALID_TYPES: Final = frozenset(
    (
        constants.FRAME_METHOD,
        constants.FRAME_HEADER,
        constants.FRAME_BODY,
        constants.FRAME_HEARTBEAT,
    )
)
_FRAME_END: Final = constants.FRAME_END
_OVERHEAD: Final = constants.FRAME_OVERHEAD


def check_frame_header(frame_type: int, size: int, frame_max: int) -> None:
    """Raise FrameError for a frame header no well-behaved peer would send."""
    if frame_type not in _VALID_TYPES:
        raise FrameError(f"unknown frame type {frame_type}")
    if frame_max and size + _OVERHEAD > frame_max:
        raise FrameError(f"frame of {size + _OVERHEAD} bytes exceeds frame_max {frame_max}")


@attrs.frozen
class Frame:
    """One whole frame: its type, channel and the exact bytes it arrived as."""

    frame_type: int
    channel: int
    raw: bytes

    @property
    def payload(self) -> bytes:
        return self.raw[constants.FRAME_HEADER_SIZE : -1]

    @property
    def method_id(self) -> tuple[int, int] | None:
        if self.frame_type != constants.FRAME_METHOD or len(self.raw) < 12:
            return None
        class_id, method_id = _unpack_method_id(self.raw, constants.FRAME_HEADER_SIZE)
        return class_id, method_id

    def decode(self) -> base.Frame:
        """Decode a method frame with pamqp; FrameError if pamqp cannot."""
        try:
            _consumed, _channel, value = frame.unmarshal(self.raw)
        except (pamqp_exceptions.UnmarshalingException, ValueError, KeyError) as exc:
            raise FrameError(f"cannot decode frame: {exc}") from exc
        if not isinstance(value, base.Frame):
            raise FrameError(f"expected a method frame, got {type(value).__name__}")
        return value


class FrameReader:
    """Buffers bytes and yields whole frames; used during handshakes.

    ``frame_max`` is 4096 until Tune is agreed, then the negotiated value, so a
    peer can never make us buffer more than one frame of that size.
    """

    def __init__(self, frame_max: int = constants.FRAME_MIN_SIZE) -> None:
        self.frame_max = frame_max
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def take(self, size: int) -> bytes | None:
        """Take exactly ``size`` raw bytes (the protocol header), or None if not there yet."""
        if len(self._buffer) < size:
            return None
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def peek(self) -> bytes:
        return bytes(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next whole frame, None when more bytes are needed; FrameError if malformed."""
        buffer = self._buffer
        if len(buffer) < constants.FRAME_HEADER_SIZE:
            return None
        frame_type, channel, size = _unpack_header(buffer, 0)
        check_frame_header(frame_type, size, self.frame_max)
        end = size + _OVERHEAD
        if len(buffer) < end:
            return None
        if buffer[end - 1] != _FRAME_END:
            raise FrameError(f"bad frame-end octet {buffer[end - 1]:#04x}")
        raw = bytes(buffer[:end])
        # Deleting a prefix of a bytearray is amortised O(bytes removed) in CPython.
        del buffer[:end]
        return Frame(frame_type, channel, raw)

    def drain(self) -> bytes:
        """Whatever is buffered beyond the frames taken so far (handed to forwarding)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


class FrameScanner:
    """The forwarding hot path: finds frame boundaries without decoding frames.

    ``scan(data)`` returns the bytes that end on a frame boundary (ready to forward
    unchanged) and keeps any trailing partial frame for the next call, so a peer at
    the other end only ever sees whole frames: if this side dies mid-frame, the router
    can still write a Connection.Close that the other peer parses.

    Per frame it reads the 7-byte header and the frame-end octet, nothing else, and
    notes channel-0 method frames (Close, Close-Ok, Blocked, Unblocked) for the
    session to look at. Counters live here because this is where frames are counted.
    """

    __slots__ = ("_partial", "bytes", "frame_max", "frames", "reads")

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self._partial = bytearray()
        self.frames = 0
        self.bytes = 0
        self.reads = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._partial)

    def take_pending(self) -> bytes:
        """Hand over the held-back partial frame (when forwarding stops)."""
        pending = bytes(self._partial)
        self._partial = bytearray()
        return pending

    def scan(self, data: bytes) -> tuple[bytes | bytearray, list[Frame] | None]:
        """Split ``data`` into forwardable bytes and channel-0 method frames seen in them."""
        if self._partial:
            self._partial += data
            buffer: bytes | bytearray = self._partial
        else:
            buffer = data
        length = len(buffer)
        frame_max = self.frame_max
        position = 0
        count = 0
        controls: list[Frame] | None = None
        # Hot loop: keep it to one struct call and a few comparisons per frame.
        while length - position >= 7:
            frame_type, channel, size = _unpack_header(buffer, position)
            end = position + size + _OVERHEAD
            if frame_type not in _VALID_TYPES or (frame_max and size + _OVERHEAD > frame_max):
                check_frame_header(frame_type, size, frame_max)
            if end > length:
                break
            if buffer[end - 1] != _FRAME_END:
                raise FrameError(f"bad frame-end octet {buffer[end - 1]:#04x}")
            if channel == 0 and frame_type == 1:
                if controls is None:
                    controls = []
                controls.append(Frame(1, 0, bytes(buffer[position:end])))
            position = end
            count += 1
        if position == length:
            ready = buffer
            if buffer is self._partial:
                self._partial = bytearray()
        else:
            ready = buffer[:position]
            if buffer is self._partial:
                del self._partial[:position]
            else:
                self._partial = bytearray(buffer[position:])
        self.frames += count
        self.bytes += position
        self.reads += 1
        return ready, controls


def encode_method(method: base.Frame, channel: int = 0) -> bytes:
    """Marshal one method frame."""
    return frame.marshal(method, channel)
