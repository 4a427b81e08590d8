"""What a drain (SIGTERM, EXIT GRACEFUL) did: how many sessions closed cleanly, and who
was cut.

An operator reading ``drained=2 cut_at_deadline=0`` after a client was in fact cut at
``--disconnect-timeout`` (it never answered the router's Close) was told every client
left cleanly. The drain now counts the two kinds of cut apart and names each client cut,
so the log says which client to look at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from amqprouter.net.sockets import endpoint
from amqprouter.protocol.client_identity import bounded
from amqprouter.text import escape

if TYPE_CHECKING:
    from amqprouter.session import Session


@attrs.frozen
class Drained:
    """The outcome of one drain; the three counts add up to the sessions it began with."""

    #: Sessions that completed the close handshake (or whose client left) in time.
    drained: int
    #: Clients cut for not answering the router's Close within ``--disconnect-timeout``
    #: (or while a write to them was under way), before the deadline.
    cut_unanswered: int
    #: Sessions still there at the drain's deadline, cut then.
    cut_at_deadline: int


def who(session: Session) -> str:
    """One cut client, for the drain's log line: enough to find its other log lines."""
    parts = [f"session={session.id}", f"client={endpoint(session.client_address)}"]
    if session.vhost is not None:
        parts.append(f"vhost={escape(session.vhost)}")
    if session.connection_name is not None:
        parts.append(f"connection_name={escape(bounded(session.connection_name) or '')}")
    parts.append(f"why={session.client_cut or 'drain deadline'}")
    return " ".join(parts)
