"""Hypothesis strategies for the protocol fuzz tests: frames, tables, cuts and damage."""

from __future__ import annotations

import itertools
import struct
from typing import Any

from hypothesis import strategies as st

from amqprouter.protocol import constants

FRAME_TYPES = (
    constants.FRAME_METHOD,
    constants.FRAME_HEADER,
    constants.FRAME_BODY,
    constants.FRAME_HEARTBEAT,
)


def raw_frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return (
        constants.FRAME_HEADER_STRUCT.pack(frame_type, channel, len(payload))
        + payload
        + bytes((constants.FRAME_END,))
    )


#: Channels the router treats differently (0) or not (the rest).
channels = st.one_of(st.just(0), st.just(1), st.integers(0, 65535))

#: Method ids: the connection methods the machines look at, and anything else.
method_ids = st.one_of(
    st.sampled_from(
        [(10, number) for number in (10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61)]
        + [(20, 10), (60, 40), (10, 99), (0, 0)]
    ),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
)


@st.composite
def frames(draw: st.DrawFn, max_payload: int = 48) -> bytes:
    """One well-formed frame of any type; method frames start with a method id."""
    frame_type = draw(st.sampled_from(FRAME_TYPES))
    if frame_type == constants.FRAME_HEARTBEAT:
        return raw_frame(frame_type, 0, b"")
    payload = draw(st.binary(max_size=max_payload))
    if frame_type == constants.FRAME_METHOD:
        payload = struct.pack(">HH", *draw(method_ids)) + payload
    return raw_frame(frame_type, draw(channels), payload)


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with up to three random edits: a byte changed, bytes cut, inserted or dropped."""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data = data[:at] + bytes((draw(st.integers(0, 255)),)) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
    return data


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces at random points, as TCP may deliver it."""
    if not data:
        return []
    points = draw(st.sets(st.integers(1, len(data) - 1), max_size=12)) if len(data) > 1 else set()
    bounds = [0, *sorted(points), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


#: Values pamqp can write into a field table, nested as clients nest them (and deeper).
table_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    # pamqp writes floats as 32-bit 'f': only those survive the round trip.
    st.floats(width=32, allow_nan=False),
    st.text(max_size=16),
)
table_values: st.SearchStrategy[Any] = st.recursive(
    table_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=24,
)
tables: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=12), table_values, max_size=6
)


def depth(value: Any) -> int:
    """Nesting of a table value: a table or array is one level more than its deepest value."""
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    return 0
