"""What a trace says of frames (protocol/frame_describe.py), and what a capture holds of
those that carry credentials: byte by byte, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import body, commands, frame, header

from amqprouter.protocol.frame_describe import (
    REDACTED,
    FrameRecord,
    count_frames,
    describe,
    redacted,
)

PASSWORD = "s3cret-pa55"


def decoded(raw: bytes) -> Any:
    """The one method in ``raw``, as pamqp decodes it."""
    return frame.unmarshal(raw)[2]


def publish_frames(body_bytes: bytes = b"hello world") -> bytes:
    properties = commands.Basic.Properties(
        content_type="application/json", headers={"k": "v"}, delivery_mode=2, message_id="m1"
    )
    return (
        frame.marshal(commands.Basic.Publish(exchange="orders", routing_key="eu.new"), 3)
        + frame.marshal(header.ContentHeader(0, len(body_bytes), properties), 3)
        + frame.marshal(body.ContentBody(body_bytes), 3)
    )


def start_ok() -> bytes:
    return frame.marshal(
        commands.Connection.StartOk(
            client_properties={"product": "test"},
            mechanism="PLAIN",
            response=f"\0guest\0{PASSWORD}",
            locale="en_US",
        ),
        0,
    )


def test_a_publish_is_named_with_its_exchange_and_routing_key_only() -> None:
    method, content, payload = describe(publish_frames())
    assert method == FrameRecord(
        3,
        "method",
        len(frame.marshal(commands.Basic.Publish(exchange="orders", routing_key="eu.new"), 3)),
        method.payload,
        method="Basic.Publish",
        arguments=(("exchange", "orders"), ("routing_key", "eu.new")),
    )
    assert content.frame_type == "header" and content.body_size == 11
    assert content.properties == ("content_type", "headers", "delivery_mode", "message_id")
    assert payload == FrameRecord(3, "body", 19, 11)


def test_bodies_only_when_asked_and_only_their_first_bytes() -> None:
    assert describe(publish_frames(), bodies=5)[2].body == b"hello"
    assert describe(publish_frames(), bodies=100)[2].body == b"hello world"
    assert describe(publish_frames())[2].body is None


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        (commands.Queue.Declare(queue="q1"), (("queue", "q1"),)),
        (
            commands.Queue.Bind(queue="q1", exchange="x", routing_key="rk"),
            (("exchange", "x"), ("routing_key", "rk"), ("queue", "q1")),
        ),
        (
            commands.Exchange.Bind(destination="d", source="s", routing_key="rk"),
            (("source", "s"), ("destination", "d"), ("routing_key", "rk")),
        ),
        (
            commands.Basic.Deliver("ctag", 1, False, "x", "rk"),
            (("exchange", "x"), ("routing_key", "rk")),
        ),
        (commands.Basic.Ack(delivery_tag=7), ()),
        (commands.Channel.Open(), ()),
    ],
)
def test_only_the_names_of_where_a_message_goes(method: object, arguments: object) -> None:
    [record] = describe(frame.marshal(method, 1))  # type: ignore[arg-type]
    assert record.arguments == arguments
    assert record.method == method.name  # type: ignore[attr-defined]


def test_credentials_are_never_read_let_alone_shown() -> None:
    data = start_ok() + frame.marshal(
        commands.Connection.UpdateSecret(new_secret=PASSWORD, reason="refresh"), 0
    )
    records = describe(data, bodies=4096)
    assert [r.method for r in records] == ["Connection.StartOk", "Connection.UpdateSecret"]
    assert all(r.arguments == () and r.body is None for r in records)
    assert PASSWORD not in repr(records)


def test_redacted_keeps_a_valid_frame_without_the_secret() -> None:
    cleaned = redacted(start_ok())
    assert PASSWORD.encode() not in cleaned
    _consumed, channel, method = frame.unmarshal(cleaned)
    assert isinstance(method, commands.Connection.StartOk)
    assert (channel, method.response, method.mechanism) == (0, REDACTED, "PLAIN")
    assert method.client_properties == {"product": "test"}

    secure = redacted(frame.marshal(commands.Connection.SecureOk(response=PASSWORD), 0))
    assert decoded(secure).response == REDACTED
    update = frame.marshal(commands.Connection.UpdateSecret(new_secret=PASSWORD, reason="r"), 0)
    assert decoded(redacted(update)).new_secret == REDACTED
    others = publish_frames()
    assert redacted(others) is others


def test_a_start_ok_that_does_not_decode_is_replaced_whole() -> None:
    raw = bytearray(start_ok())
    raw[13] = 0xFF  # the client-properties table's length: far past the frame
    cleaned = redacted(bytes(raw))
    assert PASSWORD.encode() not in cleaned
    assert decoded(cleaned).response == REDACTED


def test_a_malformed_method_is_still_named_and_says_why() -> None:
    good = frame.marshal(commands.Queue.Declare(queue="q"), 1)
    broken = good[:11] + b"\x00\x00\xff" + good[14:]  # queue name longer than the frame
    [record] = describe(broken)
    assert record.method == "Queue.Declare" and record.arguments == ()
    assert record.error is not None and "cannot decode Queue.Declare" in record.error


def test_heartbeats_unknown_methods_and_counting() -> None:
    heartbeat = bytes([8, 0, 0, 0, 0, 0, 0, 0xCE])
    unknown = bytes([1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE])
    records = describe(heartbeat + unknown + b"\x01\x00")  # a truncated tail is ignored
    assert [(r.frame_type, r.method) for r in records] == [
        ("heartbeat", None),
        ("method", "unknown method 99.1"),
    ]
    assert count_frames(publish_frames() + heartbeat) == 4
