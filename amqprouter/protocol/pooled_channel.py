"""One broker channel of a pooled connection: its stage, and whether it may be reused.

A broker channel on which a client only published (without ``mandatory``, with or
without publisher confirms) and fetched with ``no_ack``, and perhaps declared a named,
non-exclusive queue or an exchange or bound one, leaves nothing behind on the broker
that belongs to that client: the router may answer the client's Channel.Close itself
and hand the open channel to the next client (``safe``). Anything else leaves state a
later client must not inherit, so the channel is really closed: consumers, acks, nacks
and rejects, QoS, transactions, exclusive or server-named queues, ``nowait`` requests
(their errors would come back late), a ``mandatory`` publish (its Basic.Return may come
back after the client left), and any method not listed as safe.

A channel is reused only while no request of its client is unanswered
(``outstanding``): a Get's answer counts as answered once its content is complete, so
no frame of one client's request ever reaches the next client.

Delivery tags are numbered per broker channel. A reused channel starts a client at
``tag_base`` (the deliveries the channel carried before), and the router subtracts it
from the tags the broker sends and adds it to the tags the client acks, so every client
counts its own deliveries from 1.

Publisher confirms keep a channel reusable, as the PHP-style client (connect, publish
one message with a confirm, leave) is what pooling is for. Once the broker channel is
in confirm mode it stays so (AMQP has no way back), and the broker numbers its publishes
from 1 at the select, across clients. So:

* a channel is kept only when every publish on it has been confirmed (acked or nacked):
  no confirm of one client can reach the next;
* the next client's Confirm.Select is answered by the router (the broker's channel is in
  that mode already), and its confirms are shifted by ``confirm_base`` (the broker's
  publishes before it), so it counts its own from 1; an ack with ``multiple`` covers
  only its own publishes, since the earlier ones were all confirmed before it came;
* a client that did not ask for confirms on such a channel never sees the broker's
  acks and nacks: the router drops them (``client_confirms``).

Sans-IO: the ``Multiplexer`` (multiplexer.py) reads the few fields it needs from the
raw frame with struct and hands each channel the events.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from typing import Final

from amqprouter.protocol.frames import Frame

# (class id, method id) of the methods a pooled connection looks into.
CHANNEL_OPEN: Final = (20, 10)
CHANNEL_OPEN_OK: Final = (20, 11)
CHANNEL_CLOSE: Final = (20, 40)
CHANNEL_CLOSE_OK: Final = (20, 41)
CONFIRM_SELECT: Final = (85, 10)
CONFIRM_SELECT_OK: Final = (85, 11)
EXCHANGE_DECLARE: Final = (40, 10)
EXCHANGE_DECLARE_OK: Final = (40, 11)
QUEUE_DECLARE: Final = (50, 10)
QUEUE_DECLARE_OK: Final = (50, 11)
QUEUE_BIND: Final = (50, 20)
QUEUE_BIND_OK: Final = (50, 21)
BASIC_PUBLISH: Final = (60, 40)
BASIC_DELIVER: Final = (60, 60)
BASIC_GET: Final = (60, 70)
BASIC_GET_OK: Final = (60, 71)
BASIC_GET_EMPTY: Final = (60, 72)
BASIC_ACK: Final = (60, 80)
BASIC_REJECT: Final = (60, 90)
BASIC_NACK: Final = (60, 120)

#: The replies that answer one outstanding request of a safe channel (Get-Ok's only
#: once its content is complete).
REPLIES: Final = frozenset(
    {EXCHANGE_DECLARE_OK, QUEUE_DECLARE_OK, QUEUE_BIND_OK, BASIC_GET_EMPTY, CONFIRM_SELECT_OK}
)
#: Publisher confirms, broker side: the same methods as a consumer's ack and nack.
CONFIRMS: Final = frozenset({BASIC_ACK, BASIC_NACK})
#: Methods that carry a delivery tag first in their arguments, client side.
TAGGED_BY_CLIENT: Final = frozenset({BASIC_ACK, BASIC_REJECT, BASIC_NACK})

_ARGUMENTS_AT: Final = 11  # frame header (7) + class and method ids (4)
_LONGLONG: Final = struct.Struct(">Q")
_BODY_SIZE: Final = struct.Struct(">Q")  # a content header's body size, after class and weight


class Stage(enum.Enum):
    #: Channel.Open sent to the broker; its Open-Ok not yet seen.
    OPENING = "opening"
    OPEN = "open"
    #: The client sent Channel.Close, forwarded; the broker's Close-Ok ends it.
    CLIENT_CLOSING = "client closing"
    #: The broker sent Channel.Close (an error), forwarded; the client's Close-Ok ends it.
    BROKER_CLOSING = "broker closing"
    #: The router closes it (its client left): frames are dropped until the Close-Ok.
    ROUTER_CLOSING = "router closing"
    #: Open on the broker and bound to no client: the next Channel.Open takes it.
    IDLE = "idle"


def _short_string_end(raw: bytes, at: int) -> int:
    """Where the short string at ``at`` ends (raises IndexError past the frame)."""
    return at + 1 + raw[at]


def _bits_after_strings(raw: bytes, strings: int) -> int:
    """The octet of bits that follows a reserved short and ``strings`` short strings."""
    at = _ARGUMENTS_AT + 2
    for _ in range(strings):
        at = _short_string_end(raw, at)
    return raw[at]


class PooledChannel:
    """What the router knows of one broker channel."""

    __slots__ = (
        "_confirmed_early",
        "client_confirms",
        "confirm_base",
        "confirming",
        "content_left",
        "delivered",
        "open_answered",
        "outstanding",
        "published",
        "safe",
        "stage",
        "tag_base",
        "unconfirmed",
        "unsettled",
    )

    def __init__(self) -> None:
        self.stage = Stage.OPENING
        self.safe = True
        #: The broker channel is in confirm mode; the current client asked for it.
        self.confirming = False
        self.client_confirms = False
        #: Publishes the broker numbered since its Confirm.Select (its last tag), and
        #: ``published`` when the current client got the channel.
        self.published = 0
        self.confirm_base = 0
        #: Broker tags published and not yet acked or nacked, oldest first; and those
        #: confirmed out of order, removed once they reach the front.
        self.unconfirmed: deque[int] = deque()
        self._confirmed_early: set[int] = set()
        #: Requests of the current client not yet answered.
        self.outstanding = 0
        #: Body bytes still to come of a Get-Ok's content (-1: waiting for its header).
        self.content_left: int | None = None
        #: Deliveries (Get-Ok, Deliver) the broker numbered on this channel so far.
        self.delivered = 0
        #: ``delivered`` when the current client got the channel (its tags count from here).
        self.tag_base = 0
        #: Handed to a client whose first method on it is not seen yet: the multiplexer
        #: may swap it for a kept channel of the other kind (confirm mode or not).
        self.unsettled = False
        #: The router answered the client's Channel.Open itself: the broker's Open-Ok
        #: of this channel is not the client's to see.
        self.open_answered = False

    @property
    def reusable(self) -> bool:
        return (
            self.safe
            and self.stage is Stage.OPEN
            and self.outstanding == 0
            and not self.unconfirmed
        )

    def handed_over(self) -> None:
        """A new client takes this (idle) channel."""
        self.stage = Stage.OPEN
        self.tag_base = self.delivered
        self.outstanding = 0
        self.client_confirms = False
        self.confirm_base = self.published
        self.unsettled = True

    # -- the client's frames -------------------------------------------------------

    def client_method(self, frame: Frame, method: tuple[int, int]) -> bytes | None:
        """Note what the client's method does to the channel; the frame to forward (its
        delivery tag shifted on a reused channel), or None when the router answers it
        (``answer``)."""
        raw = frame.raw
        try:
            if method == BASIC_PUBLISH:
                # reserved short, exchange, routing key, then mandatory (1) and immediate (2).
                self.client_published(_bits_after_strings(raw, 2))
            elif method == CONFIRM_SELECT:
                self.client_confirms = True
                if self.confirming:
                    return None  # the broker channel is in confirm mode already
                self.confirming = True
                if raw[_ARGUMENTS_AT] & 1:  # nowait: an error would come back late
                    self.safe = False
                else:
                    self.outstanding += 1
            elif method == BASIC_GET:
                # reserved short, queue, then no_ack (1): with acks, the channel holds
                # deliveries the broker waits to hear about.
                if not _bits_after_strings(raw, 1) & 1:
                    self.safe = False
                self.outstanding += 1
            elif method == QUEUE_DECLARE:
                # reserved short, queue, then passive 1, durable 2, exclusive 4,
                # auto-delete 8, nowait 16. A server-named queue (empty name) is a private
                # queue by use, and an exclusive one belongs to this connection.
                name_length = raw[_ARGUMENTS_AT + 2]
                if name_length == 0 or _bits_after_strings(raw, 1) & (4 | 16):
                    self.safe = False
                self.outstanding += 1
            elif method == EXCHANGE_DECLARE:
                # reserved short, exchange, type, then ... nowait 16.
                if _bits_after_strings(raw, 2) & 16:
                    self.safe = False
                self.outstanding += 1
            elif method == QUEUE_BIND:
                # reserved short, queue, exchange, routing key, then nowait 1.
                if _bits_after_strings(raw, 3) & 1:
                    self.safe = False
                self.outstanding += 1
            else:
                self.safe = False
                if method in TAGGED_BY_CLIENT and self.tag_base:
                    return self._shift(raw, self.tag_base)
        except IndexError:
            # A frame too short for its own fields: the broker will say what is wrong;
            # the channel is not kept.
            self.safe = False
        return raw

    def client_published(self, flags: int) -> None:
        """A Basic.Publish with these flags (mandatory 1, immediate 2) went on."""
        if flags & 0b11:
            self.safe = False
        if self.confirming:
            self.published += 1
            self.unconfirmed.append(self.published)

    @staticmethod
    def wants_answer(frame: Frame) -> bool:
        """Whether a Confirm.Select the router answers itself asked for a Select-Ok."""
        return not frame.raw[_ARGUMENTS_AT] & 1

    # -- the broker's frames -------------------------------------------------------

    def broker_method(self, frame: Frame, method: tuple[int, int]) -> bytes | None:
        """Note the broker's method; the frame to forward (its tag shifted if reused), or
        None when the client must not see it."""
        raw = frame.raw
        if method in CONFIRMS and self.confirming:
            return self._confirm(raw)
        if method in REPLIES:
            self.outstanding = max(0, self.outstanding - 1)
        elif method == BASIC_GET_OK:
            self.delivered += 1
            self.content_left = -1
            if self.tag_base:
                return self._shift(raw, -self.tag_base)
        elif method == BASIC_DELIVER:
            self.delivered += 1
            if self.tag_base:
                # consumer tag (a short string), then the delivery tag.
                at = _short_string_end(raw, _ARGUMENTS_AT)
                return self._shift(raw, -self.tag_base, at)
        return raw

    def broker_content(self, frame: Frame) -> None:
        """A content header or body frame from the broker: completes a Get-Ok's content."""
        left = self.content_left
        if left is None:
            return
        if left < 0:  # the header: class (2), weight (2), body size (8)
            left = _BODY_SIZE.unpack_from(frame.raw, _ARGUMENTS_AT)[0]
        else:
            left -= len(frame.raw) - 8
        if left <= 0:
            self.content_left = None
            self.outstanding = max(0, self.outstanding - 1)
        else:
            self.content_left = left

    def _confirm(self, raw: bytes) -> bytes | None:
        """A broker ack or nack of publishes: noted, and shifted to the client's count."""
        (tag,) = _LONGLONG.unpack_from(raw, _ARGUMENTS_AT)
        multiple = raw[_ARGUMENTS_AT + 8] & 1
        unconfirmed = self.unconfirmed
        if multiple:
            upto = tag if tag else self.published  # tag 0: every publish so far
            while unconfirmed and unconfirmed[0] <= upto:
                self._confirmed_early.discard(unconfirmed.popleft())
        else:
            self._confirmed_early.add(tag)
        while unconfirmed and unconfirmed[0] in self._confirmed_early:
            self._confirmed_early.discard(unconfirmed.popleft())
        if not self.client_confirms:
            return None
        if tag and tag <= self.confirm_base:
            return None  # an earlier client's (cannot happen: it was all confirmed)
        return self._shift(raw, -self.confirm_base) if self.confirm_base else raw

    @staticmethod
    def _shift(raw: bytes, by: int, at: int = _ARGUMENTS_AT) -> bytes:
        (tag,) = _LONGLONG.unpack_from(raw, at)
        if tag == 0:  # "every delivery so far" (multiple=true): no number to shift
            return raw
        return raw[:at] + _LONGLONG.pack(max(tag + by, 0)) + raw[at + 8 :]
