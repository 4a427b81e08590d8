"""Property tests of the close handshake and of reading Connection.Close.

After the router sent Close, the peer may send anything before its Close-Ok (the spec
asks that it be discarded), or its own Close crossing ours. For any bytes the machine
gives CloseOkReceived, PeerClosed, "need more data" or a ProtocolError, never another
exception, whatever the cuts.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.protocol import (
    CLOSE_OK_FRAME,
    CloseHandshake,
    CloseOkReceived,
    FrameError,
    FrameReader,
    PeerClosed,
    ProtocolError,
    constants,
)
from amqprouter.protocol.methods import close_frame, peer_closed
from tests.protocol.strategies import cuts, damaged, frames, raw_frame

FRAME_MAX = constants.FRAME_MIN_SIZE


@attrs.frozen
class Outcome:
    event: Any
    error: str | None
    sent: bytes


def converse(pieces: list[bytes]) -> Outcome:
    machine = CloseHandshake(FRAME_MAX)
    sent = bytearray()
    reads = iter(pieces)
    try:
        while True:
            event = machine.next_event()
            sent += machine.data_to_send()
            if event is not None:
                assert isinstance(event, CloseOkReceived | PeerClosed)
                return Outcome(event, None, bytes(sent))
            piece = next(reads, None)
            if piece is None:
                return Outcome(None, None, bytes(sent))
            machine.receive_data(piece)
    except ProtocolError as exc:
        return Outcome(None, str(exc), bytes(sent) + machine.data_to_send())


def _is_close_or_close_ok(frame: bytes) -> bool:
    return (
        frame[0] == constants.FRAME_METHOD
        and frame[1:3] == b"\0\0"
        and frame[7:9] == b"\0\x0a"
        and frame[9:11] in (b"\0\x32", b"\0\x33")
    )


#: What a peer may send between our Close and its answer: anything but Close/Close-Ok.
noise = st.lists(frames().filter(lambda frame: not _is_close_or_close_ok(frame)), max_size=5)
closes = st.builds(
    PeerClosed,
    st.integers(0, 65535),
    st.text(max_size=40),
    st.integers(0, 65535),
    st.integers(0, 65535),
)


@given(st.one_of(st.binary(max_size=120), noise.map(b"".join).flatmap(damaged)), st.data())
def test_fuzz_close_handshake_any_bytes(data: bytes, draw: st.DataObject) -> None:
    assert converse(draw.draw(cuts(data))) == converse([data])


@given(noise, st.one_of(st.none(), closes), st.binary(max_size=20), st.data())
def test_fuzz_close_handshake_answer_after_noise(
    before: list[bytes], crossing: PeerClosed | None, after: bytes, draw: st.DataObject
) -> None:
    if crossing is None:
        answer = CLOSE_OK_FRAME
        expected = Outcome(CloseOkReceived(), None, b"")
    else:
        answer = close_frame(*attrs.astuple(crossing))
        text = crossing.reply_text.encode()[:255].decode(errors="ignore")
        expected = Outcome(attrs.evolve(crossing, reply_text=text), None, CLOSE_OK_FRAME)
    # Whatever follows the answer is never read.
    data = b"".join(before) + answer + after
    assert converse([data]) == expected
    assert converse(draw.draw(cuts(data))) == expected


@given(st.binary(max_size=300))
def test_fuzz_reading_close(arguments: bytes) -> None:
    raw = raw_frame(1, 0, constants.METHOD_ID_STRUCT.pack(*constants.CONNECTION_CLOSE) + arguments)
    reader = FrameReader(0)
    reader.feed(raw)
    frame = reader.next_frame()
    assert frame is not None
    try:
        closed = peer_closed(frame)
    except FrameError as exc:
        assert str(exc) == "FRAME_ERROR - Connection.Close too short"
        assert len(arguments) < 7 or len(arguments) < 7 + arguments[2]
        return
    # Read as the layout says: code, short string, class id, method id; extra ignored.
    text_end = 3 + arguments[2]
    assert closed.reply_code == int.from_bytes(arguments[:2], "big")
    assert closed.reply_text == arguments[3:text_end].decode(errors="replace")
    assert closed.class_id == int.from_bytes(arguments[text_end : text_end + 2], "big")
    assert closed.method_id == int.from_bytes(arguments[text_end + 2 : text_end + 4], "big")
