"""The broker-facing handshake: the router replays the client's handshake.

Everything the router will say is known before the broker says anything (the
client's StartOk and TuneOk, the vhost), so it is all sent at once, pipelined::

    (initiate: protocol header, the client's StartOk with amqprouter_client /
     amqprouter_host added, the client's TuneOk and a fresh Open(vhost), in one write)
    AWAITING_START --Start--> AWAITING_TUNE        (version checked)
    AWAITING_TUNE --Tune--> AWAITING_OPEN_OK       (the client's TuneOk checked against it)
    AWAITING_OPEN_OK --Open-Ok--> OPENED           (event BrokerOpened)
    any state --Close--> CLOSED                    (Close-Ok queued; event PeerClosed, relayed
                                                    to the client with the broker's code/text)

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

from pamqp import commands

from amqprouter.protocol import constants, properties
from amqprouter.protocol.errors import ProtocolError, UnexpectedFrame
from amqprouter.protocol.events import BrokerOpened, PeerClosed, StartOkInfo
from amqprouter.protocol.frames import Frame, encode_method
from amqprouter.protocol.machine import Machine
from amqprouter.protocol.methods import open_frame
from amqprouter.protocol.tune import TuneParams, broker_tune_ok


class BrokerState(enum.Enum):
    AWAITING_START = "awaiting Connection.Start"
    AWAITING_TUNE = "awaiting Connection.Tune"
    AWAITING_OPEN_OK = "awaiting Connection.OpenOk"
    OPENED = "opened"
    CLOSED = "closed"


class BrokerHandshake(Machine):
    """Sans-IO replay of a client's handshake towards one broker."""

    def __init__(
        self,
        *,
        vhost: str,
        start_ok: StartOkInfo,
        client_tune: TuneParams,
        extra_client_properties: dict[str, str],
        backend: str,
    ) -> None:
        self.vhost = vhost
        self.backend = backend
        self.state = BrokerState.AWAITING_START
        self.tune: TuneParams | None = None
        self._client_tune = client_tune
        super().__init__()
        self._outgoing += constants.PROTOCOL_HEADER
        self._outgoing += properties.splice_client_properties(start_ok.raw, extra_client_properties)
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

    def next_event(self) -> BrokerOpened | PeerClosed | None:
        while self.state not in (BrokerState.OPENED, BrokerState.CLOSED):
            if self.state is BrokerState.AWAITING_START:
                self._check_not_header_reply()
            frame = self._reader.next_frame()
            if frame is None:
                return None
            event = self._handle(frame)
            if event is not None:
                return event
        return None

    def _check_not_header_reply(self) -> None:
        # A broker that does not speak 0-9-1 answers with its own protocol header.
        seen = self._reader.peek()[:4]
        if seen and constants.PROTOCOL_HEADER.startswith(seen) and len(seen) == 4:
            raise ProtocolError(
                f"broker {self.backend} refused protocol AMQP 0-9-1",
                reply_code=constants.NOT_IMPLEMENTED,
            )

    def _handle(self, frame: Frame) -> BrokerOpened | PeerClosed | None:
        screened = self._screen(frame, f"broker {self.backend}, while {self.state.value}")
        if isinstance(screened, PeerClosed):
            self.state = BrokerState.CLOSED
            return screened
        if not screened:
            return None
        method_id = frame.method_id
        # Start, Tune and Open-Ok are read from their fixed layout: pamqp would decode
        # the broker's whole server-properties table only for the router to drop it.
        if self.state is BrokerState.AWAITING_START and method_id == constants.CONNECTION_START:
            version = frame.unpack(constants.VERSION_ARGUMENTS)
            if version != (0, 9):
                raise ProtocolError(
                    f"broker {self.backend} speaks AMQP {version[0]}-{version[1]}, not 0-9-1",
                    reply_code=constants.NOT_IMPLEMENTED,
                )
            self.state = BrokerState.AWAITING_TUNE
            return None
        if self.state is BrokerState.AWAITING_TUNE and method_id == constants.CONNECTION_TUNE:
            offer = TuneParams(*frame.unpack(constants.TUNE_ARGUMENTS))
            # Raises if the broker is stricter than the TuneOk already sent.
            self.tune = broker_tune_ok(self._client_tune, offer, self.backend)
            self._reader.frame_max = self.tune.frame_max
            self.state = BrokerState.AWAITING_OPEN_OK
            return None
        if self.state is BrokerState.AWAITING_OPEN_OK and method_id == constants.CONNECTION_OPEN_OK:
            self.state = BrokerState.OPENED
            return BrokerOpened(open_ok=frame.raw, pending=self._reader.drain())
        if method_id == constants.CONNECTION_SECURE:
            raise ProtocolError(
                f"broker {self.backend} asked for Connection.Secure, which amqprouter "
                "does not relay; use the PLAIN or AMQPLAIN mechanism",
                reply_code=constants.NOT_IMPLEMENTED,
            )
        raise UnexpectedFrame(f"broker {self.backend} sent {frame.name} while {self.state.value}")
