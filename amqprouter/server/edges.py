"""The edges of a connection: the hooks that open a transport before AMQP flows.

Three hooks plug into the session's seams (session/connect.py), each over the
server's TLS state of the moment it runs:

* ``start_proxied_client``: an ACCEPT-PROXY listener's client sends a PROXY header
  first; it is read exactly (within ``PROXY_HEADER_TIMEOUT``), its source checked
  against the listener's ALLOW list, and the transport then names that client.
* ``start_tls_client``: a secure listener's TLS handshake, with the INGRESS context.
* ``wrap_backend``: a backend flagged SEND-PROXY[-V2] gets a PROXY header, one
  flagged TLS the EGRESS context's handshake.

Each raises ``OSError`` or ``PeerGone`` on failure (``ClientRefused`` for a client
the ALLOW list refuses, already logged); the session closes the transport.
"""

from __future__ import annotations

from typing import Final

import trio

from amqprouter.net.proxy_transport import (
    ClientRefused,
    ProxiedTransport,
    read_proxy_header,
    send_proxy_header,
)
from amqprouter.net.sockets import PeerGone
from amqprouter.net.tls_context import TlsState, missing
from amqprouter.net.tls_transport import TlsHandshakeError, tls_handshake
from amqprouter.net.transport import Transport, tcp_socket
from amqprouter.protocol.proxy_header import ProxyHeaderError, build
from amqprouter.routing import Backend
from amqprouter.server.admission import ListenOptions, RefusalLog
from amqprouter.session.connect import StartClient

#: An ACCEPT-PROXY listener waits this long for the header (inside the client
#: handshake timeout, which may be shorter): a balancer sends it at once.
PROXY_HEADER_TIMEOUT: Final = 5.0


class Edges:
    """A server's connection hooks over its TLS state and its refusal log."""

    def __init__(self, tls: TlsState, refusals: RefusalLog) -> None:
        #: The TLS settings and contexts of both directions (the TLS verb changes them;
        #: each hook takes the context of the moment it runs).
        self.tls = tls
        #: Clients refused by an ALLOW list (after their PROXY header, here).
        self.refusals = refusals

    async def start_proxied_client(
        self,
        listen_port: int,
        options: ListenOptions,
        then: StartClient | None,
        transport: Transport,
    ) -> Transport:
        """Read the client's PROXY header (exactly), check its source, then ``then``."""
        try:
            with trio.fail_after(PROXY_HEADER_TIMEOUT):
                header = await read_proxy_header(tcp_socket(transport))
        except trio.TooSlowError:
            raise PeerGone(f"no PROXY header within {PROXY_HEADER_TIMEOUT}s") from None
        except ProxyHeaderError as exc:
            raise PeerGone(f"invalid PROXY header: {exc}") from exc
        # LOCAL (a balancer's health check) and UNKNOWN name no client: the
        # connection's own peer is the one to check and to show.
        peer = header.source or transport.peer_name()
        if not options.allows(peer[0]):
            self.refusals.refused(peer[0], peer[1], listen_port)
            raise ClientRefused(f"{peer[0]} is not allowed")
        if then is not None:
            transport = await then(transport)
        return transport if header.source is None else ProxiedTransport(transport, header.source)

    async def start_tls_client(self, transport: Transport) -> Transport:
        context = self.tls.context("INGRESS")
        if context is None:  # cannot happen once listening, but never serve plain here
            raise OSError("TLS INGRESS is not configured")
        try:
            return await tls_handshake(tcp_socket(transport), context, server_side=True)
        except TlsHandshakeError as exc:
            raise OSError(f"TLS handshake failed: {exc.reason}") from exc

    async def wrap_backend(
        self, backend: Backend, transport: Transport, client: tuple[str, int] | None
    ) -> Transport:
        """A backend flagged SEND-PROXY[-V2] gets a PROXY header first (in clear, before
        TLS): source ``client``, destination the address actually connected to. With no
        ``client`` (the health check's probe) the source is the router's own end of the
        connection: the header names the router itself. (Not v1 UNKNOWN nor v2 LOCAL,
        HAProxy's check headers: RabbitMQ 3.10 fails a connection whose header names
        no address.) A backend flagged TLS gets the EGRESS context, SNI and name check
        on its host."""
        if backend.send_proxy:
            source = transport.local_name() if client is None else client
            header = build(backend.send_proxy, source, transport.peer_name())
            await send_proxy_header(transport, header)
        if not backend.tls:
            return transport
        context = self.tls.context("EGRESS")
        if context is None:
            lacking = " and ".join(missing(self.tls.settings("EGRESS")))
            raise OSError(f"TLS EGRESS is not usable yet: it needs {lacking}")
        try:
            return await tls_handshake(
                tcp_socket(transport), context, server_side=False, server_hostname=backend.host
            )
        except TlsHandshakeError as exc:
            raise OSError(f"TLS handshake failed: {exc.reason}") from exc
