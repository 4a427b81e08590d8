"""The pooled connection's multiplexer: channel remapping, reuse, errors, delivery tags.

The frames are built with pamqp, as a client library and RabbitMQ would send them, and
fed to the sans-IO ``Multiplexer``; a small fake broker (``FakeBroker``) answers the way
RabbitMQ does where a test needs it.
"""

from __future__ import annotations

import struct
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pamqp import body, commands, frame, header

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.protocol.channel_map import ChannelMap, rewrite_channel
from amqprouter.protocol.errors import FrameError
from amqprouter.protocol.frames import Frame, FrameReader
from amqprouter.protocol.methods import method_frame
from amqprouter.protocol.multiplexer import (
    BROKER,
    CHANNEL_ZERO,
    ClientError,
    ClientStream,
    Multiplexer,
    channel_open_frame,
    channel_open_ok_frame,
)


def raw(method: object, channel: int) -> bytes:
    return frame.marshal(method, channel)  # type: ignore[arg-type]


def as_frame(data: bytes) -> Frame:
    reader = FrameReader(1 << 20)
    reader.feed(data)
    got = reader.next_frame()
    assert got is not None
    return got


def decode(data: bytes) -> tuple[int, object]:
    _consumed, channel, value = frame.unmarshal(data)
    return channel, value


def data_ok(data: bytes, method: object, channel: int) -> bool:
    return data == raw(method, channel)


def send(
    mux: Multiplexer[str], client: str, method: object, channel: int
) -> list[tuple[str | None, bytes]]:
    return mux.client_frame(client, as_frame(raw(method, channel)))


def from_broker(
    mux: Multiplexer[str], method: object, channel: int
) -> list[tuple[str | None, bytes]]:
    return mux.broker_frame(as_frame(raw(method, channel)))


def open_channel(mux: Multiplexer[str], client: str, channel: int) -> int:
    """Open ``client``'s ``channel`` (answering as the broker would); its broker channel."""
    sends = send(mux, client, commands.Channel.Open(), channel)
    assert len(sends) == 1
    target, data = sends[0]
    if target is BROKER:
        broker_channel, value = decode(data)
        assert isinstance(value, commands.Channel.Open)
        answer = from_broker(mux, commands.Channel.OpenOk(), broker_channel)
        assert answer == [(client, raw(commands.Channel.OpenOk(), channel))]
    else:
        assert target == client
        assert data == channel_open_ok_frame(channel)
    bound = mux.channels.to_broker(client, channel)
    assert bound is not None
    return bound


def publish(mux: Multiplexer[str], client: str, channel: int, *, mandatory: bool = False) -> int:
    """Publish one message; the broker channel it went to."""
    pieces = [
        raw(commands.Basic.Publish(exchange="", routing_key="q", mandatory=mandatory), channel),
        raw(header.ContentHeader(0, 3, commands.Basic.Properties()), channel),
        raw(body.ContentBody(b"abc"), channel),
    ]
    targets = set()
    for piece in pieces:
        sends = mux.client_frame(client, as_frame(piece))
        assert len(sends) == 1 and sends[0][0] is BROKER
        broker_channel, _ = (
            decode(sends[0][1])
            if piece[0] == 1
            else (struct.unpack_from(">H", sends[0][1], 1)[0], None)
        )
        assert sends[0][1][3:] == piece[3:]  # only the channel field changed
        targets.add(broker_channel)
    assert len(targets) == 1
    return targets.pop()


def close_channel(mux: Multiplexer[str], client: str, channel: int) -> bool:
    """Close ``client``'s channel; True if the router answered it (the channel kept)."""
    broker_channel = mux.channels.to_broker(client, channel)
    sends = send(mux, client, commands.Channel.Close(200, "bye", 0, 0), channel)
    assert len(sends) == 1
    target, data = sends[0]
    if target == client:
        assert data == raw(commands.Channel.CloseOk(), channel)
        return True
    assert target is BROKER
    assert decode(data)[0] == broker_channel
    assert from_broker(mux, commands.Channel.CloseOk(), broker_channel) == [
        (client, raw(commands.Channel.CloseOk(), channel))
    ]
    return False


def test_rewrite_channel_changes_only_the_channel_field() -> None:
    data = raw(commands.Basic.Publish(exchange="x", routing_key="y"), 3)
    rewritten = rewrite_channel(data, 700)
    assert rewritten == raw(commands.Basic.Publish(exchange="x", routing_key="y"), 700)
    assert rewritten[3:] == data[3:] and rewritten[0] == data[0]


def test_two_clients_with_the_same_channel_number_get_different_broker_channels() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    a = open_channel(mux, "a", 1)
    b = open_channel(mux, "b", 1)
    assert a != b
    assert publish(mux, "a", 1) == a
    assert publish(mux, "b", 1) == b
    # The broker's answer on b's channel goes to b's channel 1 only.
    sends = from_broker(mux, commands.Basic.Ack(delivery_tag=1), b)
    assert sends == [("b", raw(commands.Basic.Ack(delivery_tag=1), 1))]


def test_a_safe_channel_is_answered_by_the_router_and_reused() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    first = open_channel(mux, "a", 1)
    publish(mux, "a", 1)
    assert close_channel(mux, "a", 1)
    assert mux.idle == 1
    # The next client's Open is answered by the router with the kept channel.
    sends = send(mux, "b", commands.Channel.Open(), 5)
    assert sends == [("b", channel_open_ok_frame(5))]
    assert mux.channels.to_broker("b", 5) == first
    assert mux.reused == 1


@pytest.mark.parametrize(
    "method",
    [
        commands.Basic.Consume(queue="q"),
        commands.Basic.Qos(prefetch_count=1),
        commands.Confirm.Select(nowait=True),
        commands.Tx.Select(),
        commands.Basic.Ack(delivery_tag=1),
        commands.Basic.Get(queue="q", no_ack=False),
        commands.Queue.Declare(queue="", exclusive=False),
        commands.Queue.Declare(queue="mine", exclusive=True),
        commands.Queue.Declare(queue="q", nowait=True),
        commands.Basic.Publish(exchange="", routing_key="q", mandatory=True),
    ],
    ids=lambda m: (
        type(m).__qualname__
        if not isinstance(m, commands.Queue.Declare)
        else f"Declare({m.queue!r},{m.exclusive},{m.nowait})"
    ),
)
def test_an_unsafe_channel_is_really_closed(method: object) -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    broker_channel = open_channel(mux, "a", 1)
    sends = send(mux, "a", method, 1)
    assert [target for target, _ in sends] == [BROKER]
    reply = {
        commands.Basic.Consume: commands.Basic.ConsumeOk("ctag"),
        commands.Basic.Qos: commands.Basic.QosOk(),
        commands.Confirm.Select: commands.Confirm.SelectOk(),
        commands.Tx.Select: commands.Tx.SelectOk(),
        commands.Basic.Get: commands.Basic.GetEmpty(),
        commands.Queue.Declare: commands.Queue.DeclareOk("q", 0, 0),
    }.get(type(method))
    if reply is not None and not getattr(method, "nowait", False):
        from_broker(mux, reply, broker_channel)
    assert not close_channel(mux, "a", 1)
    assert mux.idle == 0 and mux.channels.allocated == 0


def test_safe_declares_and_no_ack_gets_keep_the_channel() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = open_channel(mux, "a", 1)
    for method, reply in [
        (
            commands.Queue.Declare(queue="named", durable=True),
            commands.Queue.DeclareOk("named", 0, 0),
        ),
        (commands.Exchange.Declare(exchange="x"), commands.Exchange.DeclareOk()),
        (commands.Queue.Bind(queue="named", exchange="x"), commands.Queue.BindOk()),
        (commands.Basic.Get(queue="named", no_ack=True), commands.Basic.GetEmpty()),
    ]:
        send(mux, "a", method, 1)
        from_broker(mux, reply, b)
    assert close_channel(mux, "a", 1)


def test_a_channel_with_an_unanswered_request_is_not_reused() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "a", 1)
    send(mux, "a", commands.Queue.Declare(queue="named"), 1)
    assert not close_channel(mux, "a", 1)


def test_a_get_counts_as_answered_once_its_content_is_complete() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = open_channel(mux, "a", 1)
    send(mux, "a", commands.Basic.Get(queue="q", no_ack=True), 1)
    from_broker(
        mux, commands.Basic.GetOk(delivery_tag=1, exchange="", routing_key="q", message_count=0), b
    )
    from_broker(mux, header.ContentHeader(0, 6, commands.Basic.Properties()), b)
    state = mux._channels[b]
    assert state.outstanding == 1  # the body is still to come
    from_broker(mux, body.ContentBody(b"abcdef"), b)
    assert state.outstanding == 0
    assert close_channel(mux, "a", 1)


def test_delivery_tags_restart_at_one_for_the_next_client_of_a_channel() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = open_channel(mux, "a", 1)
    for tag in (1, 2):
        send(mux, "a", commands.Basic.Get(queue="q", no_ack=True), 1)
        sends = from_broker(
            mux,
            commands.Basic.GetOk(delivery_tag=tag, exchange="", routing_key="q", message_count=0),
            b,
        )
        assert decode(sends[0][1])[1].delivery_tag == tag  # type: ignore[attr-defined]
        from_broker(mux, header.ContentHeader(0, 0, commands.Basic.Properties()), b)
    assert close_channel(mux, "a", 1)
    assert open_channel(mux, "c", 1) == b
    send(mux, "c", commands.Basic.Get(queue="q", no_ack=False), 1)
    sends = from_broker(
        mux, commands.Basic.GetOk(delivery_tag=3, exchange="", routing_key="q", message_count=0), b
    )
    assert decode(sends[0][1])[1].delivery_tag == 1  # type: ignore[attr-defined]
    # The client's ack of its tag 1 reaches the broker as tag 3.
    sends = send(mux, "c", commands.Basic.Ack(delivery_tag=1), 1)
    assert sends[0][1] == raw(commands.Basic.Ack(delivery_tag=3), b)


def confirm_channel(mux: Multiplexer[str], client: str) -> int:
    """Open channel 1 and ask for confirms (answered as the broker would, when it goes
    to the broker); the broker channel."""
    b = open_channel(mux, client, 1)
    sends = send(mux, client, commands.Confirm.Select(), 1)
    if sends[0][0] is BROKER:
        assert from_broker(mux, commands.Confirm.SelectOk(), b) == [
            (client, raw(commands.Confirm.SelectOk(), 1))
        ]
    else:
        assert sends == [(client, raw(commands.Confirm.SelectOk(), 1))]
    return b


def test_a_confirming_channel_is_reused_once_all_its_publishes_are_confirmed() -> None:
    """The PHP client: connect, confirm, publish one, leave; the next client gets the
    same broker channel, its Confirm.Select answered by the router, its confirm tag 1."""
    mux: Multiplexer[str] = Multiplexer(2047)
    b = confirm_channel(mux, "a")
    for _ in range(2):
        publish(mux, "a", 1)
    assert from_broker(mux, commands.Basic.Ack(delivery_tag=2, multiple=True), b) == [
        ("a", raw(commands.Basic.Ack(delivery_tag=2, multiple=True), 1))
    ]
    assert close_channel(mux, "a", 1)
    assert confirm_channel(mux, "c") == b  # the router answered its Confirm.Select
    publish(mux, "c", 1)
    # The broker's tag 3 is the new client's first publish.
    assert from_broker(mux, commands.Basic.Ack(delivery_tag=3), b) == [
        ("c", raw(commands.Basic.Ack(delivery_tag=1), 1))
    ]
    assert mux.detach("c") == []  # all confirmed: kept again
    assert mux.idle == 1


def test_a_channel_with_unconfirmed_publishes_is_not_reused() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = confirm_channel(mux, "a")
    for _ in range(3):
        publish(mux, "a", 1)
    # Acked out of order, one still missing.
    from_broker(mux, commands.Basic.Ack(delivery_tag=2), b)
    from_broker(mux, commands.Basic.Nack(delivery_tag=1), b)
    assert not close_channel(mux, "a", 1)


def test_out_of_order_confirms_complete_the_count() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = confirm_channel(mux, "a")
    for _ in range(3):
        publish(mux, "a", 1)
    for tag in (3, 1, 2):
        from_broker(mux, commands.Basic.Ack(delivery_tag=tag), b)
    assert close_channel(mux, "a", 1)


def test_a_client_that_did_not_ask_for_confirms_never_sees_them() -> None:
    # One broker channel only: the kept confirming one cannot be swapped for a fresh one.
    mux: Multiplexer[str] = Multiplexer(1)
    b = confirm_channel(mux, "a")
    publish(mux, "a", 1)
    from_broker(mux, commands.Basic.Ack(delivery_tag=1), b)
    assert close_channel(mux, "a", 1)
    assert open_channel(mux, "plain", 1) == b
    publish(mux, "plain", 1)
    assert from_broker(mux, commands.Basic.Ack(delivery_tag=2), b) == []
    assert close_channel(mux, "plain", 1)  # confirmed (unseen): kept


def test_a_publisher_without_confirms_is_moved_off_a_kept_confirming_channel() -> None:
    """A kept channel in confirm mode would have the broker ack every publish of a client
    that asked for none: its first method moves it to a fresh broker channel, opened
    behind the Open-Ok the router gave; the confirming channel stays kept."""
    mux: Multiplexer[str] = Multiplexer(2047)
    b = confirm_channel(mux, "a")
    publish(mux, "a", 1)
    from_broker(mux, commands.Basic.Ack(delivery_tag=1), b)
    assert close_channel(mux, "a", 1)
    assert open_channel(mux, "plain", 1) == b  # answered by the router at once
    sends = send(mux, "plain", commands.Basic.Publish(exchange="", routing_key="q"), 1)
    assert [target for target, _data in sends] == [BROKER, BROKER]
    fresh, opened = decode(sends[0][1])
    assert isinstance(opened, commands.Channel.Open) and fresh != b
    assert decode(sends[1][1])[0] == fresh
    assert mux.channels.to_broker("plain", 1) == fresh
    assert mux.idle == 1  # the confirming channel, for the next confirming client
    assert from_broker(mux, commands.Channel.OpenOk(), fresh) == []  # the client had one
    assert publish(mux, "plain", 1) == fresh
    assert close_channel(mux, "plain", 1)
    # The next confirming client gets the confirming channel, its Select answered.
    assert open_channel(mux, "c", 1) in (b, fresh)
    assert send(mux, "c", commands.Confirm.Select(), 1) == [
        ("c", raw(commands.Confirm.SelectOk(), 1))
    ]
    assert mux.channels.to_broker("c", 1) == b


def test_a_kept_channel_of_the_right_kind_is_taken() -> None:
    """Kept channels in and out of confirm mode: each client's first method picks one of
    its kind, whichever the Channel.Open took."""
    mux: Multiplexer[str] = Multiplexer(2047)
    confirming = confirm_channel(mux, "a")
    plain = open_channel(mux, "b", 2)
    assert close_channel(mux, "b", 2) and close_channel(mux, "a", 1)
    assert open_channel(mux, "p", 1) == confirming  # the most recently kept
    assert publish(mux, "p", 1) == plain
    assert close_channel(mux, "p", 1)
    assert open_channel(mux, "c", 1) == plain  # the most recently kept
    assert send(mux, "c", commands.Confirm.Select(), 1) == [
        ("c", raw(commands.Confirm.SelectOk(), 1))
    ]
    assert mux.channels.to_broker("c", 1) == confirming
    assert mux.channels.allocated == 2  # nothing opened on the broker


def test_confirms_are_each_clients_own() -> None:
    """Two confirming clients on one connection: each sees only its own acks, numbered
    from 1 (a broker ack with multiple=true covers one channel, so one client)."""
    mux: Multiplexer[str] = Multiplexer(2047)
    a = open_channel(mux, "a", 1)
    b = open_channel(mux, "b", 1)
    for client, channel in (("a", a), ("b", b)):
        send(mux, client, commands.Confirm.Select(), 1)
        from_broker(mux, commands.Confirm.SelectOk(), channel)
    for _ in range(3):
        publish(mux, "a", 1)
        publish(mux, "b", 1)
    assert from_broker(mux, commands.Basic.Ack(delivery_tag=3, multiple=True), a) == [
        ("a", raw(commands.Basic.Ack(delivery_tag=3, multiple=True), 1))
    ]
    assert from_broker(mux, commands.Basic.Nack(delivery_tag=2), b) == [
        ("b", raw(commands.Basic.Nack(delivery_tag=2), 1))
    ]


def test_a_broker_channel_error_goes_to_that_client_only() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    a = open_channel(mux, "a", 1)
    open_channel(mux, "b", 1)
    close = commands.Channel.Close(404, "NOT_FOUND - no queue 'nope'", 50, 10)
    assert from_broker(mux, close, a) == [("a", raw(close, 1))]
    sends = send(mux, "a", commands.Channel.CloseOk(), 1)
    assert sends == [(BROKER, raw(commands.Channel.CloseOk(), a))]
    assert mux.channels.to_broker("a", 1) is None
    assert mux.channels.to_broker("b", 1) is not None
    # The channel number is free again: the next Open gets it afresh from the broker.
    assert send(mux, "a", commands.Channel.Open(), 1) == [(BROKER, channel_open_frame(a))]


def test_a_client_that_leaves_has_its_unsafe_channels_closed_and_safe_ones_kept() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    safe = open_channel(mux, "a", 1)
    consuming = open_channel(mux, "a", 2)
    publish(mux, "a", 1)
    send(mux, "a", commands.Basic.Consume(queue="q"), 2)
    sends = mux.detach("a")
    assert sends == [
        (BROKER, raw(commands.Channel.Close(200, "client left the pool", 0, 0), consuming))
    ]
    assert mux.idle == 1
    # A delivery still on its way to the gone consumer reaches nobody.
    deliver = commands.Basic.Deliver("ctag", 1, False, "", "q")
    assert from_broker(mux, deliver, consuming) == []
    assert from_broker(mux, commands.Channel.CloseOk(), consuming) == []
    assert mux.channels.allocated == 1 and mux.channels.to_client(safe) is None


def test_a_frame_on_a_channel_never_opened_is_the_clients_error_alone() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    with pytest.raises(ClientError) as caught:
        send(mux, "a", commands.Basic.Publish(exchange="", routing_key="q"), 9)
    assert caught.value.reply_code == 504


def test_channel_max_is_respected() -> None:
    mux: Multiplexer[str] = Multiplexer(2)
    open_channel(mux, "a", 1)
    open_channel(mux, "b", 1)
    sends = send(mux, "c", commands.Channel.Open(), 1)
    assert len(sends) == 1 and sends[0][0] == "c"
    _, close = decode(sends[0][1])
    assert isinstance(close, commands.Channel.Close) and close.reply_code == 506
    assert send(mux, "c", commands.Channel.CloseOk(), 1) == []


class ChannelMapMachine(RuleBasedStateMachine):
    """Arbitrary open/close sequences: no broker channel serves two client channels, the
    map is exact both ways, numbers stay within channel_max and are reused."""

    def __init__(self) -> None:
        super().__init__()
        self.map: ChannelMap[int] = ChannelMap(8)
        self.model: dict[tuple[int, int], int] = {}

    @rule(client=st.integers(0, 3), channel=st.integers(1, 4))
    def open(self, client: int, channel: int) -> None:
        if (client, channel) in self.model:
            return
        number = self.map.allocate()
        if len(self.model) >= 8:
            assert number is None
            return
        assert number is not None and 1 <= number <= 8
        assert number not in self.model.values()
        self.map.bind(client, channel, number)
        self.model[(client, channel)] = number

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        if not self.model:
            return
        key = data.draw(st.sampled_from(sorted(self.model)))
        number = self.model.pop(key)
        assert self.map.unbind(number) == key
        self.map.release(number)

    @invariant()
    def exact_both_ways(self) -> None:
        for (client, channel), number in self.model.items():
            assert self.map.to_broker(client, channel) == number
            assert self.map.to_client(number) == (client, channel)
        assert self.map.allocated == len(self.model) == self.map.bound
        # Lowest first: the numbers in use never exceed how many are in use at most.
        assert all(number <= 8 for number in self.model.values())


TestChannelMap = ChannelMapMachine.TestCase


class MultiplexerMachine(RuleBasedStateMachine):
    """Clients open, publish on, close and abandon channels against a fake broker that
    answers at once: every frame reaches the channel it was meant for, nothing reaches a
    client on a channel it did not open, and every broker channel is accounted for."""

    def __init__(self) -> None:
        super().__init__()
        self.mux: Multiplexer[int] = Multiplexer(6)
        self.open: set[tuple[int, int]] = set()

    def _broker_answers(
        self, sends: list[tuple[int | None, bytes]]
    ) -> list[tuple[int | None, bytes]]:
        """Deliver to the fake broker, which answers Open and Close at once."""
        out: list[tuple[int | None, bytes]] = []
        for target, data in sends:
            if target is not BROKER:
                out.append((target, data))
                continue
            channel, value = decode(data)
            if isinstance(value, commands.Channel.Open):
                out += self.mux.broker_frame(as_frame(raw(commands.Channel.OpenOk(), channel)))
            elif isinstance(value, commands.Channel.Close):
                out += self.mux.broker_frame(as_frame(raw(commands.Channel.CloseOk(), channel)))
        return out

    @rule(client=st.integers(0, 3), channel=st.integers(1, 3))
    def open_channel(self, client: int, channel: int) -> None:
        if (client, channel) in self.open:
            return
        got = self._broker_answers(
            self.mux.client_frame(client, as_frame(raw(commands.Channel.Open(), channel)))
        )
        assert len(got) == 1 and got[0][0] == client
        reply_channel, value = decode(got[0][1])
        assert reply_channel == channel
        if isinstance(value, commands.Channel.OpenOk):
            self.open.add((client, channel))
        else:
            assert isinstance(value, commands.Channel.Close) and value.reply_code == 506
            assert (
                self.mux.client_frame(client, as_frame(raw(commands.Channel.CloseOk(), channel)))
                == []
            )

    @rule(data=st.data(), unsafe=st.booleans())
    def publish(self, data: st.DataObject, unsafe: bool) -> None:
        if not self.open:
            return
        client, channel = data.draw(st.sampled_from(sorted(self.open)))
        method = commands.Basic.Publish(
            exchange="", routing_key=f"{client}.{channel}", mandatory=unsafe
        )
        sends = self.mux.client_frame(client, as_frame(raw(method, channel)))
        assert len(sends) == 1 and sends[0][0] is BROKER
        broker_channel, _value = decode(sends[0][1])
        assert data_ok(sends[0][1], method, broker_channel)
        assert self.mux.channels.to_client(broker_channel) == (client, channel)
        # The broker's answer on that channel goes back to exactly that client channel.
        back = self.mux.broker_frame(
            as_frame(raw(commands.Basic.Ack(delivery_tag=1), broker_channel))
        )
        assert back == [(client, raw(commands.Basic.Ack(delivery_tag=1), channel))]

    @rule(data=st.data())
    def close_channel(self, data: st.DataObject) -> None:
        if not self.open:
            return
        client, channel = data.draw(st.sampled_from(sorted(self.open)))
        got = self._broker_answers(
            self.mux.client_frame(
                client, as_frame(raw(commands.Channel.Close(200, "", 0, 0), channel))
            )
        )
        assert got == [(client, raw(commands.Channel.CloseOk(), channel))]
        self.open.discard((client, channel))

    @rule(client=st.integers(0, 3))
    def leave(self, client: int) -> None:
        got = self._broker_answers(self.mux.detach(client))
        assert got == []
        self.open = {key for key in self.open if key[0] != client}

    @invariant()
    def accounted(self) -> None:
        assert self.mux.channels.bound == len(self.open)
        assert self.mux.channels.allocated == len(self.open) + self.mux.idle
        assert self.mux.channels.allocated <= 6
        for client, channel in self.open:
            number = self.mux.channels.to_broker(client, channel)
            assert number is not None and self.mux.channels.to_client(number) == (client, channel)


TestMultiplexer = MultiplexerMachine.TestCase


def publish_bytes(channel: int, body_size: int = 3) -> bytes:
    return b"".join(
        [
            raw(commands.Basic.Publish(exchange="", routing_key="q"), channel),
            raw(header.ContentHeader(0, body_size, commands.Basic.Properties()), channel),
            raw(body.ContentBody(b"x" * body_size), channel),
        ]
    )


def test_a_client_stream_rewrites_content_in_place_and_keeps_the_order() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "other", 1)  # so that the client's channel 1 is broker channel 2
    b = open_channel(mux, "a", 1)
    assert b == 2
    stream = ClientStream(mux, "a", 131072)
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    data = publish_bytes(1) + heartbeat + publish_bytes(1)
    out = stream.receive(data)
    # Each message (publish, header, body) in one run, rewritten in place.
    targets = [target for target, _ in out]
    assert targets == [BROKER, CHANNEL_ZERO, BROKER]
    to_broker = b"".join(item for target, item in out if target is BROKER)  # type: ignore[misc]
    assert to_broker == rewrite_channel_all(publish_bytes(1) * 2, b)
    assert stream.frames == 7


def rewrite_channel_all(data: bytes, channel: int) -> bytes:
    reader = FrameReader(1 << 20)
    reader.feed(data)
    out = []
    while (got := reader.next_frame()) is not None:
        out.append(rewrite_channel(got.raw, channel))
    return b"".join(out)


@given(cuts=st.lists(st.integers(1, 200), max_size=20))
def test_a_client_stream_cut_anywhere_gives_the_same_bytes(cuts: list[int]) -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = open_channel(mux, "a", 1)
    stream = ClientStream(mux, "a", 131072)
    data = publish_bytes(1, 50) * 3
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    pieces.append(data[at:])
    sent = b"".join(
        item  # type: ignore[misc]
        for piece in pieces
        for target, item in stream.receive(piece)
        if target is BROKER
    )
    assert sent == rewrite_channel_all(data, b)


def test_a_client_stream_follows_its_channels_within_one_read() -> None:
    """Two channels interleaved in one read each go to their own broker channel; a
    Channel.Close in the middle of a read counts for what follows it in that read."""
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "other", 1)
    b1 = open_channel(mux, "a", 1)
    b2 = open_channel(mux, "a", 2)
    stream = ClientStream(mux, "a", 131072)
    out = stream.receive(publish_bytes(1) + publish_bytes(2) + publish_bytes(1))
    sent = b"".join(item for target, item in out if target is BROKER)  # type: ignore[misc]
    assert sent == (
        rewrite_channel_all(publish_bytes(1), b1)
        + rewrite_channel_all(publish_bytes(2), b2)
        + rewrite_channel_all(publish_bytes(1), b1)
    )
    close = raw(commands.Channel.Close(200, "bye", 0, 0), 1)
    with pytest.raises(ClientError, match=r"expected 'channel\.open' on channel 1"):
        stream.receive(publish_bytes(1) + close + raw(body.ContentBody(b"late"), 1))


def test_a_client_stream_refuses_a_frame_over_frame_max_and_a_bad_frame_end() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "a", 1)
    with pytest.raises(FrameError):
        ClientStream(mux, "a", 4096).receive(publish_bytes(1, 5000))
    bad = bytearray(publish_bytes(1))
    bad[-1] = 0
    with pytest.raises(FrameError):
        ClientStream(mux, "a", 4096).receive(bytes(bad))


def test_content_on_a_channel_never_opened_is_the_clients_error() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    stream = ClientStream(mux, "a", 4096)
    with pytest.raises(ClientError):
        stream.receive(raw(body.ContentBody(b"abc"), 3))


def test_a_streamed_mandatory_publish_makes_its_channel_unsafe() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "a", 1)
    stream = ClientStream(mux, "a", 131072)
    mandatory = raw(commands.Basic.Publish(exchange="x", routing_key="k", mandatory=True), 1)
    assert [target for target, _ in stream.receive(mandatory)] == [BROKER]
    assert not close_channel(mux, "a", 1)


def test_streamed_publishes_count_for_confirms() -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    b = confirm_channel(mux, "a")
    stream = ClientStream(mux, "a", 131072)
    stream.receive(publish_bytes(1) * 2)
    from_broker(mux, commands.Basic.Ack(delivery_tag=1), b)
    # One of the two still unconfirmed: the channel is not kept.
    assert mux._channels[b].unconfirmed == deque([2])
    from_broker(mux, commands.Basic.Ack(delivery_tag=2), b)
    assert close_channel(mux, "a", 1)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x08\x00\x01\x00\x00\x00\x00\xce", 501),  # a heartbeat on channel 1
        (method_frame((60, 99), b"", 1), 540),  # no such method
        (method_frame((10, 50), b"\x00\xc8\x00\x00\x00\x00\x00", 1), 503),  # Close on 1
    ],
    ids=["heartbeat", "unknown", "connection-method"],
)
def test_what_the_broker_would_end_the_connection_for_ends_that_client_only(
    data: bytes, code: int
) -> None:
    mux: Multiplexer[str] = Multiplexer(2047)
    open_channel(mux, "a", 1)
    with pytest.raises(ClientError) as caught:
        mux.client_frame("a", as_frame(data))
    assert caught.value.reply_code == code
