"""Property tests of the frame reader (handshakes) and the frame scanner (forwarding).

For any bytes: whole frames come out that re-serialise to a prefix of the input, then
either a FrameError or an incomplete tail; never another exception; and cutting the
input into pieces, as TCP may, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.protocol import FrameReader, FrameScanner, ProtocolError, constants
from amqprouter.protocol import frames as frames_module
from tests.protocol.strategies import cuts, damaged, frames, raw_frame

#: 0 is "no limit"; 16 and 64 make oversized frames common; 4096 is the pre-Tune limit.
frame_maxes = st.sampled_from([0, 16, 64, constants.FRAME_MIN_SIZE])
streams = st.one_of(
    st.binary(max_size=160),
    st.lists(frames(), max_size=6).map(b"".join),
    st.lists(frames(), max_size=6).map(b"".join).flatmap(damaged),
)


Walk = Callable[[bytes, int, int], tuple[int, int, list[int] | None]]


@attrs.frozen
class Read:
    frames: list[bytes]
    error: str | None
    rest: bytes


def read_all(pieces: list[bytes], frame_max: int) -> Read:
    reader = FrameReader(frame_max)
    out: list[bytes] = []
    try:
        for piece in pieces:
            reader.feed(piece)
            while (frame := reader.next_frame()) is not None:
                # Each frame re-serialises from its parts to the bytes it arrived as.
                assert raw_frame(frame.frame_type, frame.channel, frame.raw[7:-1]) == frame.raw
                out.append(frame.raw)
    except ProtocolError as exc:
        return Read(out, str(exc), b"")
    return Read(out, None, reader.peek())


def _incomplete(rest: bytes, frame_max: int) -> bool:
    if len(rest) < constants.FRAME_HEADER_SIZE:
        return True
    size: int = constants.FRAME_HEADER_STRUCT.unpack_from(rest)[2]
    return len(rest) < size + constants.FRAME_OVERHEAD


@given(streams, frame_maxes, st.data())
def test_fuzz_frame_reader(data: bytes, frame_max: int, draw: st.DataObject) -> None:
    whole = read_all([data], frame_max)
    taken = b"".join(whole.frames)
    assert data.startswith(taken)
    if whole.error is None:
        assert taken + whole.rest == data
        assert _incomplete(whole.rest, frame_max)
    assert read_all(draw.draw(cuts(data)), frame_max) == whole


@attrs.frozen
class Scan:
    forwarded: bytes
    controls: list[bytes]
    error: str | None
    pending: int


def scan_all(pieces: list[bytes], frame_max: int) -> Scan:
    scanner = FrameScanner(frame_max)
    forwarded = bytearray()
    controls: list[bytes] = []
    error = None
    try:
        for piece in pieces:
            out, found = scanner.scan(piece)
            for part in out:
                forwarded += part
            controls += [frame.raw for frame in found or ()]
    except ProtocolError as exc:
        error = str(exc)
    assert scanner.bytes == len(forwarded)
    return Scan(bytes(forwarded), controls, error, scanner.pending)


def _channel_zero_methods(raws: list[bytes]) -> list[bytes]:
    return [raw for raw in raws if raw[0] == constants.FRAME_METHOD and raw[1:3] == b"\0\0"]


@given(streams, frame_maxes, st.data())
def test_fuzz_frame_scanner(data: bytes, frame_max: int, draw: st.DataObject) -> None:
    reference = read_all([data], frame_max)
    whole = scan_all([data], frame_max)
    chunked = scan_all(draw.draw(cuts(data)), frame_max)
    # The scanner and the reader agree on where frames end and on what is wrong.
    assert whole.error == chunked.error == reference.error
    if reference.error is None:
        assert whole.forwarded == chunked.forwarded == b"".join(reference.frames)
        assert whole.controls == chunked.controls == _channel_zero_methods(reference.frames)
        assert whole.pending == chunked.pending == len(reference.rest)
    else:
        # A read that ends in a malformed frame forwards nothing of that read (the
        # session closes the connection), so pieces may forward a longer prefix of
        # the good frames before it than one piece does; never anything else.
        good = b"".join(reference.frames)
        assert good.startswith(whole.forwarded)
        assert good.startswith(chunked.forwarded)


def _walked(walk: Walk, data: bytes, position: int, frame_max: int) -> object:
    try:
        return walk(data, position, frame_max)
    except ProtocolError as exc:
        return f"{type(exc).__name__}: {exc}"


@given(streams, frame_maxes, st.integers(0, 12))
def test_fuzz_both_walks_agree(data: bytes, frame_max: int, position: int) -> None:
    # The scanner takes walk_indexed when the module is compiled and walk_unpacked when
    # it is not; both are run here, in whichever build this run imported (CI: both).
    position = min(position, len(data))
    indexed = _walked(frames_module.walk_indexed, data, position, frame_max)
    assert indexed == _walked(frames_module.walk_unpacked, data, position, frame_max)


def test_the_scanner_walks_with_the_faster_loop_for_its_build() -> None:
    expected = frames_module.walk_indexed if frames_module.COMPILED else frames_module.walk_unpacked
    assert frames_module._walk is expected
