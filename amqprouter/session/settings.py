"""Per-session settings: what we offer in Tune and how long each wait may last."""

from __future__ import annotations

from typing import Final

import attrs

from amqprouter.protocol import TuneParams

#: From accept to Connection.Open. RabbitMQ's own handshake_timeout is 10 s.
CLIENT_HANDSHAKE_TIMEOUT: Final = 10.0
#: One TCP connect attempt to one broker address; a dead address is skipped after this.
CONNECT_TIMEOUT: Final = 5.0
#: From TCP connect to the broker's Open-Ok (covers a slow vhost or auth backend).
BROKER_HANDSHAKE_TIMEOUT: Final = 10.0
#: The auth service's answer for one client (AUTH SERVICE); --auth-timeout. No answer
#: in time is a DENY.
AUTH_TIMEOUT: Final = 5.0
#: Waiting for a Close-Ok once a Close was sent or seen. A healthy peer answers in
#: milliseconds; short enough that a client learns of a dead broker within a second.
CLOSE_TIMEOUT: Final = 0.5
#: A graceful disconnect (SESSION/VHOST/BACKEND commands, drains, shutdown) waits this
#: long for the client's Close-Ok: a busy client library may take longer than a
#: second to answer, and the operator asked for a clean close.
DISCONNECT_TIMEOUT: Final = 5.0
#: A pause longer than this ends the session with a graceful disconnect, rather than
#: leaving the client stalled without knowing why.
MAX_PAUSE: Final = 300.0
#: A write that cannot finish for this long means the peer stopped reading, when no
#: heartbeat was negotiated (with heartbeat h the default is 2 h, RabbitMQ's rule).
WRITE_TIMEOUT_WITHOUT_HEARTBEAT: Final = 30.0


@attrs.frozen
class Timeouts:
    client_handshake: float = CLIENT_HANDSHAKE_TIMEOUT
    connect: float = CONNECT_TIMEOUT
    broker_handshake: float = BROKER_HANDSHAKE_TIMEOUT
    close: float = CLOSE_TIMEOUT
    disconnect: float = DISCONNECT_TIMEOUT
    max_pause: float = MAX_PAUSE
    auth: float = AUTH_TIMEOUT
    #: None: two heartbeat intervals, or WRITE_TIMEOUT_WITHOUT_HEARTBEAT without heartbeats.
    write: float | None = None

    def write_for(self, heartbeat: int) -> float:
        """The write timeout of a session that negotiated ``heartbeat`` seconds."""
        if self.write is not None:
            return self.write
        return 2.0 * heartbeat if heartbeat > 0 else WRITE_TIMEOUT_WITHOUT_HEARTBEAT


@attrs.frozen
class SessionSettings:
    tune: TuneParams = attrs.field(factory=TuneParams)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
