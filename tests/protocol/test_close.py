from __future__ import annotations

from pamqp import commands

from amqprouter.protocol import (
    CLOSE_OK_FRAME,
    CloseHandshake,
    CloseOkReceived,
    PeerClosed,
    close_frame,
)
from tests.protocol.helpers import HEARTBEAT, decode_all, feed_bytewise, method


def test_close_frame_exact_bytes() -> None:
    assert close_frame(320, "CONNECTION_FORCED - broker gone") == method(
        commands.Connection.Close(
            reply_code=320, reply_text="CONNECTION_FORCED - broker gone", class_id=0, method_id=0
        )
    )


def test_close_text_cut_to_a_short_string() -> None:
    [close] = decode_all(close_frame(320, "x" * 1000))
    assert close.reply_text == "x" * 255


def test_close_ok_awaited_other_frames_discarded() -> None:
    machine = CloseHandshake(131072)
    data = (
        method(
            commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key="q"),
            1,
        )
        + HEARTBEAT
        + CLOSE_OK_FRAME
    )
    events, sent = feed_bytewise(machine, data)
    assert events == [CloseOkReceived()]
    assert sent == b""


def test_crossing_close_is_answered() -> None:
    machine = CloseHandshake(131072)
    events, sent = feed_bytewise(
        machine,
        method(
            commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        ),
    )
    assert events == [PeerClosed(200, "bye", 0, 0)]
    assert sent == CLOSE_OK_FRAME
