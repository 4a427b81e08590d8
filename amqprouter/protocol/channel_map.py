"""Channel numbers of many clients on one broker connection, and the frames' rewrite.

Pooling mode (docs/pooling.md) puts the channels of many client connections on one
broker connection. Each client numbers its channels from 1, so the numbers collide; the
``ChannelMap`` gives each open client channel a broker channel of its own and answers
both ways: (client, client channel) → broker channel for the frames a client sends,
broker channel → (client, client channel) for the frames the broker sends.

A broker channel number is *allocated* from the time the router asks the broker to open
it until the broker has confirmed its close (or, for a channel kept open for reuse,
until the broker connection ends); it is *bound* while one client channel uses it. An
allocated number is never handed out twice, and a bound one maps to exactly one client
channel: two clients never share a broker channel at the same time, so everything that
is numbered per channel (delivery tags, publisher confirms, consumer tags) stays one
client's.

Numbers are handed out lowest first (a heap of released numbers below a high-water
mark), so a broker connection uses as few channel slots as its busiest moment needed,
within ``channel_max`` (the broker's, as negotiated).

Sans-IO: no sockets, no clock. ``rewrite_channel`` changes the 2-byte channel field of
one whole frame and nothing else.
"""

from __future__ import annotations

import heapq
import struct
from typing import Final, Generic, TypeVar

#: A client's identity as the pool knows it (any hashable: the session id).
ClientT = TypeVar("ClientT")

_CHANNEL: Final = struct.Struct(">H")


def rewrite_channel(raw: bytes, channel: int) -> bytes:
    """``raw`` (one whole frame) with its channel field set to ``channel``."""
    return raw[:1] + _CHANNEL.pack(channel) + raw[3:]


class ChannelMap(Generic[ClientT]):
    """Broker channel numbers allocated on one connection, and which client channel each
    serves."""

    __slots__ = ("_by_broker", "_by_client", "_high", "_released", "channel_max")

    def __init__(self, channel_max: int) -> None:
        #: The highest broker channel number usable (the negotiated channel_max; 0 in a
        #: Tune means "no limit", which the caller turns into 65535).
        self.channel_max = channel_max
        self._high = 0  # numbers above this were never allocated
        self._released: list[int] = []  # a heap of numbers at or below ``_high``, free
        self._by_client: dict[tuple[ClientT, int], int] = {}
        self._by_broker: dict[int, tuple[ClientT, int]] = {}

    @property
    def allocated(self) -> int:
        """Broker channel numbers in use (bound, kept for reuse or closing)."""
        return self._high - len(self._released)

    @property
    def bound(self) -> int:
        return len(self._by_broker)

    def allocate(self) -> int | None:
        """The lowest free broker channel number, now allocated; None if none is free."""
        if self._released:
            return heapq.heappop(self._released)
        if self._high >= self.channel_max:
            return None
        self._high += 1
        return self._high

    def release(self, broker_channel: int) -> None:
        """Give ``broker_channel`` back (the broker confirmed its close); it must be unbound."""
        assert broker_channel not in self._by_broker, "release of a bound channel"
        assert 0 < broker_channel <= self._high, "release of a channel never allocated"
        if broker_channel == self._high:
            self._high -= 1
            # Shrink the high-water mark past released numbers just below it.
            released = set(self._released)
            while self._high in released:
                released.discard(self._high)
                self._high -= 1
            self._released = sorted(released)  # a sorted list is a heap
        else:
            heapq.heappush(self._released, broker_channel)

    def bind(self, client: ClientT, client_channel: int, broker_channel: int) -> None:
        """Let ``client``'s ``client_channel`` use the allocated ``broker_channel``."""
        key = (client, client_channel)
        assert key not in self._by_client, "client channel bound twice"
        assert broker_channel not in self._by_broker, "broker channel bound twice"
        self._by_client[key] = broker_channel
        self._by_broker[broker_channel] = key

    def unbind(self, broker_channel: int) -> tuple[ClientT, int] | None:
        """End ``broker_channel``'s binding (it stays allocated); whom it served, if anyone."""
        key = self._by_broker.pop(broker_channel, None)
        if key is not None:
            del self._by_client[key]
        return key

    def to_broker(self, client: ClientT, client_channel: int) -> int | None:
        return self._by_client.get((client, client_channel))

    def to_client(self, broker_channel: int) -> tuple[ClientT, int] | None:
        return self._by_broker.get(broker_channel)

    def clients(self) -> set[ClientT]:
        """Every client with a channel bound."""
        return {client for client, _channel in self._by_broker.values()}

    def channels_of(self, client: ClientT) -> list[tuple[int, int]]:
        """(client channel, broker channel) for each channel ``client`` has bound."""
        return [(c, b) for (who, c), b in self._by_client.items() if who == client]
