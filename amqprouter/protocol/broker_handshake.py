"""The broker-facing handshake: the router replays the client's handshake.

Everything the router will say is known before the broker says anything (the
client's StartOk and TuneOk, the vhost), so it is all sent at once, pipelined::

    (initiate: protocol header, the client's StartOk with amqprouter_client /
     amqprouter_host (and amqprouter_auth) added, its SASL mechanism and response
     replaced when the auth service said so, the client's TuneOk and a fresh
     Open(vhost), in one write)
    AWAITING_START --Start--> AWAITING_TUNE        (version checked)
    AWAITING_TUNE --Tune--> AWAITING_OPEN_OK       (the client's TuneOk checked against it)
    AWAITING_OPEN_OK --Open-Ok--> OPENED           (event BrokerOpened)
    any state --Close--> CLOSED                    (Close-Ok queued; event PeerClosed, relayed
                                                    to the client with the broker's code/text)
    any state --Secure--> refused                  (540: amqprouter does not relay Secure)

A primed connection (server/primed.py) does the first step, header out and Start in,
before any client asks, with ``BrokerGreeting``; ``BrokerHandshake(greeted=True)`` then
sends the rest and starts at AWAITING_TUNE.

The frame-reading states are ``_TRANSITIONS`` below, driven by the shared frame loop
(``machine.HandshakeMachine``).

Pipelining costs the broker nothing (RabbitMQ reads each frame in turn, in the state the
previous one left it in) and saves the router two round trips per connection. It changes
no outcome: the TuneOk replayed is the client's whatever the broker's Tune says (a broker
stricter than the client's agreement ends the connection either way, see ``tune``); a
broker that refuses the credentials or the vhost answers Close, which wins in any state.

A fresh ``Open(virtual_host=...)`` is built rather than re-marshalling the client's,
because pamqp refuses to marshal an Open with ``insist`` or capabilities set; it is
built by hand (``methods.open_frame``), because pamqp also refuses a virtual host over
127 characters, which RabbitMQ accepts. The broker's Start, Tune and Open-Ok are read
from their fixed layout and Close by hand, so no broker frame reaches pamqp's decoder.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, NoReturn

from pamqp import commands

from amqprouter.protocol import constants, properties
from amqprouter.protocol.errors import ProtocolError, UnexpectedFrame
from amqprouter.protocol.events import BrokerGreeted, BrokerOpened, PeerClosed, StartOkInfo
from amqprouter.protocol.frames import Frame, encode_method
from amqprouter.protocol.machine import (
    EventT,
    HandshakeMachine,
    MethodId,
    StateT,
    Table,
    Transition,
)
from amqprouter.protocol.methods import open_frame
from amqprouter.protocol.tune import TuneParams, broker_tune_ok


class BrokerState(enum.Enum):
    AWAITING_START = "awaiting Connection.Start"
    AWAITING_TUNE = "awaiting Connection.Tune"
    AWAITING_OPEN_OK = "awaiting Connection.OpenOk"
    OPENED = "opened"
    CLOSED = "closed"


BrokerEvent = BrokerOpened | PeerClosed


class _BrokerSide(HandshakeMachine[StateT, EventT]):
    """What both broker-facing machines share: errors that name the backend, the check
    for a broker that answers with its own protocol header, and the Start's version."""

    def __init__(
        self, table: Table[StateT, EventT], state: StateT, backend: str, awaiting_start: StateT
    ) -> None:
        super().__init__(table, state)
        self.backend = backend
        self._awaiting_start = awaiting_start

    def _before_frame(self) -> None:
        # A broker that does not speak 0-9-1 answers with its own protocol header.
        if self.state is not self._awaiting_start:
            return
        head = self._reader.peek()[:4]
        if len(head) == 4 and constants.PROTOCOL_HEADER.startswith(head):
            raise ProtocolError(
                f"broker {self.backend} refused protocol AMQP 0-9-1",
                reply_code=constants.NOT_IMPLEMENTED,
            )

    def _peer(self) -> str:
        return f"broker {self.backend}"

    def _refuse(self, frame: Frame, row: Mapping[MethodId, Transition[StateT, EventT]]) -> NoReturn:
        raise UnexpectedFrame(f"broker {self.backend} sent {frame.name} while {self.state.value}")

    # Start, Tune and Open-Ok are read from their fixed layout: pamqp would decode
    # the broker's whole server-properties table only for the router to drop it.

    def _check_start(self, frame: Frame) -> None:
        version = frame.unpack(constants.VERSION_ARGUMENTS)
        if version != (0, 9):
            raise ProtocolError(
                f"broker {self.backend} speaks AMQP {version[0]}-{version[1]}, not 0-9-1",
                reply_code=constants.NOT_IMPLEMENTED,
            )


class BrokerHandshake(_BrokerSide[BrokerState, BrokerEvent]):
    """Sans-IO replay of a client's handshake towards one broker."""

    def __init__(
        self,
        *,
        vhost: str,
        start_ok: StartOkInfo,
        client_tune: TuneParams,
        extra_client_properties: dict[str, str],
        backend: str,
        sasl: tuple[str, bytes] | None = None,
        greeted: bool = False,
    ) -> None:
        # ``greeted``: the connection is a primed one (``BrokerGreeting`` sent the
        # protocol header and read the broker's Start already): the replay starts at Tune.
        super().__init__(
            _TRANSITIONS,
            BrokerState.AWAITING_TUNE if greeted else BrokerState.AWAITING_START,
            backend,
            BrokerState.AWAITING_START,
        )
        self.vhost = vhost
        self.tune: TuneParams | None = None
        self._client_tune = client_tune
        if not greeted:
            self._outgoing += constants.PROTOCOL_HEADER
        # ``sasl``: the mechanism and credentials the auth service gave in place of the
        # client's; the client's properties and locale are kept either way.
        spliced = properties.splice_client_properties(start_ok.raw, extra_client_properties, sasl)
        # The broker, like the router, takes no frame over 4096 bytes before Tune: a
        # client StartOk that RabbitMQ would accept as is must not be pushed past that
        # by what the router adds. It then goes unchanged, without the router's
        # properties (``properties_added`` says so, for the session to log).
        self.properties_added = len(spliced) <= constants.FRAME_MIN_SIZE
        if not self.properties_added and sasl is not None:
            # The new credentials must go even when the properties cannot.
            spliced = properties.splice_client_properties(start_ok.raw, {}, sasl)
            if len(spliced) > constants.FRAME_MIN_SIZE:
                raise ProtocolError(
                    "the StartOk with the auth service's credentials is over "
                    f"{constants.FRAME_MIN_SIZE} bytes",
                    reply_code=constants.FRAME_ERROR,
                )
        else:
            spliced = spliced if self.properties_added else start_ok.raw
        self._outgoing += spliced
        self._outgoing += encode_method(
            commands.Connection.TuneOk(
                channel_max=client_tune.channel_max,
                frame_max=client_tune.frame_max,
                heartbeat=client_tune.heartbeat,
            )
        )
        # Built by hand: pamqp refuses a virtual host over 127 characters, RabbitMQ
        # takes any short string (and the client's arrived as one).
        self._outgoing += open_frame(vhost)

    def _on_start(self, frame: Frame) -> None:
        self._check_start(frame)

    def _on_tune(self, frame: Frame) -> None:
        offer = TuneParams(*frame.unpack(constants.TUNE_ARGUMENTS))
        # Raises if the broker is stricter than the TuneOk already sent.
        self.tune = broker_tune_ok(self._client_tune, offer, self.backend)
        self._reader.frame_max = self.tune.frame_max

    def _on_open_ok(self, frame: Frame) -> BrokerOpened:
        return BrokerOpened(open_ok=frame.raw, pending=self._reader.drain())

    def _on_secure(self, frame: Frame) -> NoReturn:
        raise ProtocolError(
            f"broker {self.backend} asked for Connection.Secure, which amqprouter "
            "does not relay; use the PLAIN or AMQPLAIN mechanism",
            reply_code=constants.NOT_IMPLEMENTED,
        )


class GreetingState(enum.Enum):
    AWAITING_START = "awaiting Connection.Start"
    GREETED = "greeted"
    CLOSED = "closed"


class BrokerGreeting(_BrokerSide[GreetingState, BrokerGreeted | PeerClosed]):
    """The client-independent first step of a broker connection, done ahead of time.

    Sends the protocol header and reads the broker's Start (version checked); what
    follows is ``BrokerHandshake(greeted=True)`` once a client's Open picks this
    backend. A primed connection must hold nothing after its Start, so ``pending``
    (bytes the broker sent after it) tells the pool to discard it.
    """

    def __init__(self, backend: str) -> None:
        start = GreetingState.AWAITING_START
        super().__init__(_GREETING, start, backend, start)
        self._outgoing += constants.PROTOCOL_HEADER

    def _on_start(self, frame: Frame) -> BrokerGreeted:
        self._check_start(frame)
        return BrokerGreeted(pending=len(self._reader.peek()))


_GREETING: Final[Table[GreetingState, BrokerGreeted | PeerClosed]] = {
    GreetingState.AWAITING_START: {
        constants.CONNECTION_START: Transition(BrokerGreeting._on_start, GreetingState.GREETED),
        constants.CONNECTION_CLOSE: Transition(HandshakeMachine._on_close, GreetingState.CLOSED),
    },
}

_CLOSE: Final = Transition[BrokerState, BrokerEvent](HandshakeMachine._on_close, BrokerState.CLOSED)
# Secure is refused in every state; ``then`` is never reached.
_SECURE: Final = Transition[BrokerState, BrokerEvent](
    BrokerHandshake._on_secure, BrokerState.CLOSED
)
#: Every frame-reading state, every method it accepts, and where each leads.
_TRANSITIONS: Final[Table[BrokerState, BrokerEvent]] = {
    BrokerState.AWAITING_START: {
        constants.CONNECTION_START: Transition(
            BrokerHandshake._on_start, BrokerState.AWAITING_TUNE
        ),
        constants.CONNECTION_SECURE: _SECURE,
        constants.CONNECTION_CLOSE: _CLOSE,
    },
    BrokerState.AWAITING_TUNE: {
        constants.CONNECTION_TUNE: Transition(
            BrokerHandshake._on_tune, BrokerState.AWAITING_OPEN_OK
        ),
        constants.CONNECTION_SECURE: _SECURE,
        constants.CONNECTION_CLOSE: _CLOSE,
    },
    BrokerState.AWAITING_OPEN_OK: {
        constants.CONNECTION_OPEN_OK: Transition(BrokerHandshake._on_open_ok, BrokerState.OPENED),
        constants.CONNECTION_SECURE: _SECURE,
        constants.CONNECTION_CLOSE: _CLOSE,
    },
}
