"""What a session tells the outside world as it goes: the hooks behind /metrics' counters.

Statistics mostly read sessions (``observe.stats`` walks them once per interval), but a
few figures happen *inside* a session and are gone by the next walk: how long the
client's handshake took, how long the broker took to open, and every failed connect
attempt (a session that fails over to a second backend leaves no trace of the first).
A session reports those through one ``SessionEvents`` object, given by the server, in a
line at each point; the default, ``NO_EVENTS``, does nothing.

The hooks run on the session's task, once per session (connect failures once per
attempt), never per frame: they must not block or raise. The observer lives above
(``observe.session_metrics``); this module only names the hooks, so the session layer
does not import what implements them.
"""

from __future__ import annotations

import errno
import ssl
from typing import TYPE_CHECKING, Final, Protocol

from amqprouter.net.tls_transport import TlsHandshakeError

if TYPE_CHECKING:
    from amqprouter.routing import Backend
    from amqprouter.session.session import Session

#: The ``reason`` of a failed connect attempt: a fixed set, so a label never grows.
REFUSED: Final = "refused"
TIMEOUT: Final = "timeout"
TLS: Final = "tls"
DNS: Final = "dns"
OTHER: Final = "other"
CONNECT_FAILURES: Final = (REFUSED, TIMEOUT, TLS, DNS, OTHER)


class SessionEvents(Protocol):
    def client_opened(self, session: Session, seconds: float) -> None:
        """The client's Connection.Open arrived ``seconds`` after the session started
        (TLS and PROXY header included): the client handshake's latency."""

    def broker_opened(self, session: Session, seconds: float) -> None:
        """The broker accepted the session's vhost (its Open-Ok) ``seconds`` after the
        first connect attempt began (failed attempts and the broker handshake included);
        ``session.backend`` is the backend that did. Forwarding starts next."""

    def connect_failed(self, backend: Backend, reason: str) -> None:
        """One attempt to reach ``backend`` failed; ``reason`` is one of
        ``CONNECT_FAILURES``."""


class _NoEvents:
    def client_opened(self, session: Session, seconds: float) -> None:
        pass

    def broker_opened(self, session: Session, seconds: float) -> None:
        pass

    def connect_failed(self, backend: Backend, reason: str) -> None:
        pass


NO_EVENTS: Final[SessionEvents] = _NoEvents()


def failure_reason(exc: BaseException) -> str:
    """The ``CONNECT_FAILURES`` entry for an exception a connect attempt raised."""
    cause = exc.__cause__
    if isinstance(exc, ssl.SSLError) or isinstance(cause, (ssl.SSLError, TlsHandshakeError)):
        return TLS
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT):
        return TIMEOUT
    if isinstance(exc, OSError) and str(exc).startswith("TLS "):
        # The server's wrap hook refuses with "TLS EGRESS is not usable yet: ...".
        return TLS
    return OTHER  # unreachable networks, resets (PeerGone), a broker gone mid-header
