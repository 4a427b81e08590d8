"""Tune negotiation across the two legs of a routed connection.

The client agrees channel_max/frame_max/heartbeat with the router *before* the
router knows which broker it will reach (the vhost only arrives in Connection.Open,
after Tune). So the router offers RabbitMQ's defaults and, once the broker's Tune
arrives, checks that what the client agreed fits inside it:

* heartbeat: the client's choice is sent to the broker as is (RabbitMQ accepts any
  heartbeat from the client, and heartbeats then flow end to end);
* channel_max and frame_max: the broker is sent the client's values. If the broker
  is stricter than what the client was promised, the client could later open a
  channel or send a frame the broker rejects with an obscure error mid-session, so
  the router refuses the connection at once with 530 NOT_ALLOWED and a text saying
  which limit and which flag to lower (``--channel-max`` / ``--frame-max``).
  Clamping silently is not safe: the client would still believe the larger value.

A value of 0 means "no limit" in AMQP 0.9.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from amqprouter.protocol import constants
from amqprouter.protocol.errors import NegotiationError

#: RabbitMQ's defaults (rabbit.app: channel_max 2047, frame_max 131072, heartbeat 60).
DEFAULT_CHANNEL_MAX: Final = 2047
DEFAULT_FRAME_MAX: Final = 131072
DEFAULT_HEARTBEAT: Final = 60


def _within(limit: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """A validator for 0..limit: one comparison (three TuneParams are made per
    connection; attrs' ``and_(ge, le)`` cost five calls a field)."""

    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= limit:
            raise ValueError(f"{attribute.name} must be within 0..{limit}, not {value!r}")

    return check


_SHORT = _within(0xFFFF)
_LONG = _within(0xFFFF_FFFF)


@attrs.frozen
class TuneParams:
    """Tune's three values, checked against their wire sizes (short, long, short) so
    that encoding a Tune or TuneOk from them cannot fail later, on some connection."""

    channel_max: int = attrs.field(default=DEFAULT_CHANNEL_MAX, validator=_SHORT)
    frame_max: int = attrs.field(default=DEFAULT_FRAME_MAX, validator=_LONG)
    heartbeat: int = attrs.field(default=DEFAULT_HEARTBEAT, validator=_SHORT)

    @classmethod
    def from_wire(cls, channel_max: int, frame_max: int, heartbeat: int) -> TuneParams:
        """Values read off the wire as a short, a long and a short (``TUNE_ARGUMENTS``),
        so within their sizes by construction: made without the validators, which are
        most of a TuneParams' cost (three are made per connection)."""
        params = object.__new__(cls)
        object.__setattr__(params, "channel_max", channel_max)
        object.__setattr__(params, "frame_max", frame_max)
        object.__setattr__(params, "heartbeat", heartbeat)
        return params


def accept_client_tune_ok(offered: TuneParams, asked: TuneParams) -> TuneParams:
    """Validate the client's TuneOk against our Tune and return the agreed values."""
    for name in ("channel_max", "frame_max"):
        mine, theirs = getattr(offered, name), getattr(asked, name)
        if mine and theirs > mine:
            raise NegotiationError(
                f"NOT_ALLOWED - TuneOk {name}={theirs} is above the {mine} offered"
            )
    if asked.frame_max and asked.frame_max < constants.FRAME_MIN_SIZE:
        raise NegotiationError(
            f"NOT_ALLOWED - TuneOk frame_max={asked.frame_max} is below the minimum "
            f"{constants.FRAME_MIN_SIZE}"
        )
    # A TuneOk of 0 ("no limit") cannot exceed what we offered: keep our offer. Every
    # value comes from a TuneParams, so is within its size already.
    return TuneParams.from_wire(
        asked.channel_max or offered.channel_max,
        asked.frame_max or offered.frame_max,
        asked.heartbeat,
    )


def broker_tune_ok(client_agreed: TuneParams, broker_offer: TuneParams, backend: str) -> TuneParams:
    """The TuneOk to send the broker, or NegotiationError if the broker is stricter."""
    for name, flag in (("channel_max", "--channel-max"), ("frame_max", "--frame-max")):
        client_value, broker_value = getattr(client_agreed, name), getattr(broker_offer, name)
        if broker_value and (client_value == 0 or client_value > broker_value):
            raise NegotiationError(
                f"NOT_ALLOWED - broker {backend} allows {name}={broker_value}, below the "
                f"{client_value or 'unlimited'} this client agreed with amqprouter; "
                f"start amqprouter with {flag} {broker_value} or lower"
            )
    return client_agreed
