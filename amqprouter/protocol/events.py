"""Events the sans-IO machines hand to the session layer."""

from __future__ import annotations

from typing import Any

import attrs

from amqprouter.protocol import constants
from amqprouter.protocol.frames import Frame
from amqprouter.protocol.tune import TuneParams


@attrs.frozen
class StartOkInfo:
    """What the client said in Connection.StartOk, kept for the broker-side replay.

    The frame is replayed as it came (``raw``), so the router reads of it only what it
    uses: the mechanism and the connection name (for logs, CONN and the auth service).
    The whole client-properties table is decoded only when asked for
    (``client_properties``: an auth service's DENY looks for one capability).
    """

    raw: bytes  # the whole frame as the client sent it
    mechanism: str
    #: The client's top-level ``connection_name``, when it is a UTF-8 long string.
    connection_name: str | None = None
    #: Where the values of the top-level ``product``, ``version`` and ``platform`` keys
    #: start in ``raw`` (-1: absent): read by ``client_identity`` without decoding.
    identity_at: tuple[int, int, int] = (-1, -1, -1)

    @property
    def client_properties(self) -> dict[str, Any]:
        """The client-properties table, decoded now (with pamqp: the client handshake
        checked it first, so it decodes)."""
        method = Frame(constants.FRAME_METHOD, 0, self.raw).decode()
        properties = getattr(method, "client_properties", None)
        return dict(properties or {})


@attrs.frozen
class ClientOpened:
    """The client finished its handshake with us and asked for ``vhost``."""

    vhost: str
    start_ok: StartOkInfo
    tune: TuneParams
    pending: bytes  # frames the client pipelined after Open, to forward once the broker is open


@attrs.frozen
class BrokerOpened:
    """The broker accepted the replayed handshake."""

    open_ok: bytes  # the broker's own Open-Ok frame, passed to the client unchanged
    pending: bytes  # anything the broker sent after it, in order


@attrs.frozen
class BrokerGreeted:
    """A primed connection's broker sent its Start (``broker_handshake.BrokerGreeting``)."""

    pending: int  # bytes the broker sent after its Start: a primed connection must have none


@attrs.frozen
class PeerClosed:
    """The peer sent Connection.Close; a Close-Ok is queued for it already."""

    reply_code: int
    reply_text: str
    class_id: int = 0
    method_id: int = 0


@attrs.frozen
class CloseOkReceived:
    """The peer answered our Connection.Close."""
