"""Framing: a frame reader for the handshake and a frame scanner for forwarding.

Both parse the 7-byte frame header themselves instead of asking pamqp, because
pamqp's ``frame.unmarshal`` raises on incomplete input without saying so, never
checks a heartbeat's frame-end octet and happily waits for the 1.2 GB "frame"
that ``GET / HTTP/1.1`` parses as (see STYLE.md section 4.3). pamqp decodes only
a frame we already know to be whole and well formed.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import attrs
from pamqp import base, commands, frame
from pamqp.exceptions import UnmarshalingException

from amqprouter.protocol import constants
from amqprouter.protocol.errors import FrameError

#: Whether this module is the mypyc-compiled build of itself (``AMQPROUTER_COMPILE=1``
#: at build time; packaging/backend): then ``__file__`` is the extension, not this file.
COMPILED: Final = not __file__.endswith(".py")

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
#: Method arguments start after the frame header and the class and method ids.
_ARGUMENTS_AT: Final = constants.FRAME_HEADER_SIZE + 4
_OVERHEAD: Final = constants.FRAME_OVERHEAD


def check_frame_header(frame_type: int, size: int, frame_max: int) -> None:
    """Raise FrameError for a frame header no well-behaved peer would send."""
    if frame_type not in _VALID_TYPES:
        raise FrameError(f"unknown frame type {frame_type}")
    if frame_max and size + _OVERHEAD > frame_max:
        raise FrameError(f"frame of {size + _OVERHEAD} bytes exceeds frame_max {frame_max}")


def is_known_method(method_id: tuple[int, int]) -> bool:
    """Whether AMQP 0-9-1 defines this (class id, method id)."""
    return ((method_id[0] << 16) | method_id[1]) in commands.INDEX_MAPPING


def method_name(method_id: tuple[int, int]) -> str:
    """``Connection.Open`` for (10, 40), from pamqp's index of methods."""
    class_id, number = method_id
    known: type[base.Frame] | None = commands.INDEX_MAPPING.get((class_id << 16) | number)
    return known.name if known is not None else f"unknown method {class_id}.{number}"


@attrs.frozen
class Frame:
    """One whole frame: its type, channel and the exact bytes it arrived as."""

    frame_type: int
    channel: int
    raw: bytes

    @property
    def method_id(self) -> tuple[int, int] | None:
        if self.frame_type != constants.FRAME_METHOD or len(self.raw) < 12:
            return None
        class_id, method_id = _unpack_method_id(self.raw, constants.FRAME_HEADER_SIZE)
        return class_id, method_id

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        """Fixed-layout method arguments, read without pamqp (FrameError if too short)."""
        try:
            return layout.unpack_from(self.raw, _ARGUMENTS_AT)
        except struct.error as exc:
            raise FrameError(f"method frame too short: {exc}") from exc

    def short_string(self, offset: int = 0) -> str:
        """The short string starting ``offset`` bytes into the method arguments."""
        at = _ARGUMENTS_AT + offset
        payload_end = len(self.raw) - 1
        if at >= payload_end or at + 1 + self.raw[at] > payload_end:
            raise FrameError("short string overruns the frame")
        end = at + 1 + self.raw[at]
        try:
            return self.raw[at + 1 : end].decode()
        except UnicodeDecodeError as exc:
            raise FrameError("short string is not UTF-8") from exc

    @property
    def name(self) -> str:
        """The method's name (``Connection.Open``) from its ids alone, without decoding.

        Naming an unexpected frame must not cost a decode: the frame may be a large or
        hostile table that the state receiving it has no reason to read.
        """
        method_id = self.method_id
        return f"frame type {self.frame_type}" if method_id is None else method_name(method_id)

    def decode(self) -> base.Frame:
        """Decode a method frame with pamqp; FrameError, with a text for the peer, if not."""
        try:
            _consumed, _channel, value = frame.unmarshal(self.raw)
        except RecursionError as exc:
            # Callers bound table nesting first (field_table); this is the backstop.
            raise FrameError(f"FRAME_ERROR - cannot decode {self.name}: nested too deeply") from exc
        except Exception as exc:
            # pamqp raises UnmarshalingException (whose text quotes an object's repr,
            # so only its reason is kept), ValueError (UnicodeDecodeError included),
            # struct.error, KeyError, IndexError and, for a timestamp past year 9999,
            # OverflowError: each means the peer sent bytes that are not this method.
            reason = exc.args[-1] if isinstance(exc, UnmarshalingException) else exc
            raise FrameError(f"FRAME_ERROR - cannot decode {self.name}: {reason}") from exc
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

    def scan(self, data: bytes) -> tuple[list[bytes | memoryview], list[Frame] | None]:
        """Split ``data`` into forwardable pieces and the channel-0 method frames in them.

        The pieces (at most two: a held-back frame now completed, then whole frames from
        ``data``) are meant for one scatter write; ``data`` itself is never copied.
        """
        pieces: list[bytes | memoryview] = []
        controls: list[Frame] | None = None
        start = 0
        # Counted when the scan succeeds: a frame in ``data`` that raises FrameError
        # means nothing of this read is forwarded, the completed frame included.
        completed_bytes = 0
        if self._partial:
            start = self._complete_partial(data)
            if start < 0:
                return pieces, None
            completed = bytes(self._partial)
            self._partial = bytearray()
            if completed[0] == 1 and completed[1:3] == b"\x00\x00":
                controls = [Frame(1, 0, completed)]
            pieces.append(completed)
            completed_bytes = len(completed)
        length = len(data)
        position, count, starts = _walk(data, start, self.frame_max)
        if starts is not None:
            if controls is None:
                controls = []
            for at in starts:
                end = at + _unpack_header(data, at)[2] + _OVERHEAD
                controls.append(Frame(1, 0, bytes(data[at:end])))
        if position > start:
            whole = start == 0 and position == length
            pieces.append(data if whole else memoryview(data)[start:position])
        if position < length:
            # Its header, if whole, was checked in the loop: an oversized frame is
            # refused before its body is buffered.
            self._partial += memoryview(data)[position:]
        self.frames += count + (1 if completed_bytes else 0)
        self.bytes += position - start + completed_bytes
        self.reads += 1
        return pieces, controls

    def _complete_partial(self, data: bytes) -> int:
        """Move the rest of the held-back frame from ``data``; its end offset, or -1."""
        partial = self._partial
        taken = 0
        if len(partial) < 7:
            taken = min(7 - len(partial), len(data))
            partial += data[:taken]
            if len(partial) < 7:
                return -1
        frame_type, _channel, size = _unpack_header(partial, 0)
        check_frame_header(frame_type, size, self.frame_max)
        missing = int(size) + _OVERHEAD - len(partial)
        if len(data) - taken < missing:
            partial += memoryview(data)[taken:]
            return -1
        partial += memoryview(data)[taken : taken + missing]
        if partial[-1] != _FRAME_END:
            raise FrameError(f"bad frame-end octet {partial[-1]:#04x}")
        return taken + missing


def walk_unpacked(data: bytes, position: int, frame_max: int) -> tuple[int, int, list[int] | None]:
    """The whole frames of ``data`` from ``position``: where they end, how many, and
    where each channel-0 method frame among them starts (None if none).

    FrameError for a bad header or frame-end octet. The interpreter's loop: one struct
    call per frame (cheaper there than reading the header's bytes one by one).
    """
    length = len(data)
    limit = frame_max - _OVERHEAD if frame_max else 1 << 32
    count = 0
    starts: list[int] | None = None
    while length - position >= 7:
        frame_type, channel, size = _unpack_header(data, position)
        if size > limit or frame_type not in _VALID_TYPES:
            check_frame_header(frame_type, size, frame_max)
        end = position + size + _OVERHEAD
        if end > length:
            break
        if data[end - 1] != _FRAME_END:
            raise FrameError(f"bad frame-end octet {data[end - 1]:#04x}")
        if not channel and frame_type == 1:
            if starts is None:
                starts = []
            starts.append(position)
        position = end
        count += 1
    return position, count, starts


def walk_indexed(data: bytes, position: int, frame_max: int) -> tuple[int, int, list[int] | None]:
    """``walk_unpacked``, reading the header's bytes one by one: compiled (mypyc), each
    is a native load, about 20 times faster than the struct call (13 ns a frame); in
    the interpreter, a third slower than ``walk_unpacked``. Same results and errors."""
    length = len(data)
    limit = frame_max - _OVERHEAD if frame_max else 1 << 32
    count = 0
    starts: list[int] | None = None
    while length - position >= 7:
        frame_type = data[position]
        size = (
            (data[position + 3] << 24)
            | (data[position + 4] << 16)
            | (data[position + 5] << 8)
            | data[position + 6]
        )
        # _VALID_TYPES, as comparisons mypyc compiles to native ones (method, header,
        # body, heartbeat); tests/protocol/test_fuzz_frames.py holds the two walks equal.
        if size > limit or not (1 <= frame_type <= 3 or frame_type == 8):
            check_frame_header(frame_type, size, frame_max)
        end = position + size + _OVERHEAD
        if end > length:
            break
        if data[end - 1] != _FRAME_END:
            raise FrameError(f"bad frame-end octet {data[end - 1]:#04x}")
        if frame_type == 1 and not (data[position + 1] or data[position + 2]):
            if starts is None:
                starts = []
            starts.append(position)
        position = end
        count += 1
    return position, count, starts


#: The scanner's loop: the faster one for how this module runs.
_walk = walk_indexed if COMPILED else walk_unpacked


def encode_method(method: base.Frame, channel: int = 0) -> bytes:
    """Marshal one method frame."""
    return frame.marshal(method, channel)
