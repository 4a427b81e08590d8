from __future__ import annotations

import pytest
from pamqp import body, commands, frame, header

from amqprouter.protocol import FrameError, FrameReader, FrameScanner, constants
from tests.protocol.helpers import HEARTBEAT, method


def test_reader_yields_whole_frames_fed_byte_by_byte() -> None:
    data = method(commands.Connection.Open(virtual_host="/")) + HEARTBEAT
    reader = FrameReader()
    frames = []
    for index in range(len(data)):
        reader.feed(data[index : index + 1])
        while (item := reader.next_frame()) is not None:
            frames.append(item)
    assert [f.raw for f in frames] == [data[:-8], HEARTBEAT]
    assert frames[0].method_id == (10, 40)
    assert frames[1].frame_type == constants.FRAME_HEARTBEAT


def test_heartbeat_frame_end_is_checked() -> None:
    # pamqp accepts a 7-byte heartbeat and never looks at the frame-end octet.
    reader = FrameReader()
    reader.feed(HEARTBEAT[:-1] + b"\x00")
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert "frame-end" in str(caught.value)


def test_size_guard_before_tune_rejects_on_the_header_alone() -> None:
    reader = FrameReader()
    reader.feed(constants.FRAME_HEADER_STRUCT.pack(1, 0, 5000))
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert caught.value.reply_code == 501
    assert "frame_max 4096" in str(caught.value)


def test_http_garbage_is_a_frame_error_at_once() -> None:
    reader = FrameReader()
    reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(FrameError):
        reader.next_frame()


def test_unknown_frame_type() -> None:
    reader = FrameReader()
    reader.feed(constants.FRAME_HEADER_STRUCT.pack(9, 0, 0) + b"\xce")
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert "unknown frame type 9" in str(caught.value)


def _publish(channel: int, payload: bytes) -> bytes:
    return (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), channel)
        + frame.marshal(header.ContentHeader(0, len(payload), commands.Basic.Properties()), channel)
        + frame.marshal(body.ContentBody(payload), channel)
    )


def test_scanner_forwards_only_whole_frames_in_order() -> None:
    stream = b"".join(_publish(1, bytes([n]) * 300) for n in range(5)) + HEARTBEAT
    for chunk_size in (1, 7, 8, 100, 1000, len(stream)):
        scanner = FrameScanner(131072)
        out = bytearray()
        for start in range(0, len(stream), chunk_size):
            ready, controls = scanner.scan(stream[start : start + chunk_size])
            assert controls is None
            out += b"".join(ready)
        assert bytes(out) == stream
        assert scanner.frames == 16
        assert scanner.bytes == len(stream)
        assert scanner.pending == 0


def test_scanner_holds_back_partial_frame() -> None:
    data = _publish(1, b"x" * 50)
    scanner = FrameScanner(131072)
    ready, _ = scanner.scan(data[:-3])
    assert b"".join(ready) == data[: len(data) - len(frame.marshal(body.ContentBody(b"x" * 50), 1))]
    assert scanner.pending > 0
    ready, _ = scanner.scan(data[-3:])
    assert scanner.pending == 0


def test_scanner_reports_channel_zero_methods_only() -> None:
    close = method(
        commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    data = (
        _publish(1, b"a")
        + close
        + method(commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0), 1)
    )
    scanner = FrameScanner(131072)
    ready, controls = scanner.scan(data)
    assert b"".join(ready) == data
    assert controls is not None
    assert [f.method_id for f in controls] == [constants.CONNECTION_CLOSE]
    assert controls[0].raw == close


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (constants.FRAME_HEADER_STRUCT.pack(1, 1, 200_000), "exceeds frame_max"),
        (constants.FRAME_HEADER_STRUCT.pack(4, 1, 0) + b"\xce", "unknown frame type"),
        (constants.FRAME_HEADER_STRUCT.pack(3, 1, 1) + b"x\x00", "frame-end"),
    ],
)
def test_scanner_rejects_malformed(bad: bytes, message: str) -> None:
    scanner = FrameScanner(131072)
    with pytest.raises(FrameError) as caught:
        scanner.scan(_publish(1, b"ok") + bad)
    assert message in str(caught.value)


def test_oversized_frame_rejected_before_it_is_buffered() -> None:
    scanner = FrameScanner(8192)
    with pytest.raises(FrameError):
        scanner.scan(constants.FRAME_HEADER_STRUCT.pack(3, 1, 9000))


def test_channel_zero_method_split_across_reads_is_still_reported() -> None:
    close = method(
        commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    data = _publish(1, b"a") + close
    for split in range(1, len(close)):
        scanner = FrameScanner(131072)
        cut = len(data) - split
        first, controls_first = scanner.scan(data[:cut])
        second, controls_second = scanner.scan(data[cut:])
        assert b"".join(first) + b"".join(second) == data
        assert controls_first is None
        assert controls_second is not None and controls_second[0].raw == close


def test_oversized_header_split_across_reads_is_refused() -> None:
    scanner = FrameScanner(8192)
    header_bytes = constants.FRAME_HEADER_STRUCT.pack(3, 1, 9000)
    assert scanner.scan(header_bytes[:3]) == ([], None)
    with pytest.raises(FrameError):
        scanner.scan(header_bytes[3:])
