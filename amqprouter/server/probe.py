"""The active health check's probe: does this backend speak AMQP right now?

For each resolved address of the backend, in order, until one passes: connect as a
session does, through the server's wrap hook (a backend flagged TLS: the TLS handshake,
SNI and certificate check; SEND-PROXY[-V2]: a PROXY header naming the router's own end
of the connection as its source, there being no client), send the AMQP 0-9-1 protocol
header and expect a Connection.Start method frame (type 1, channel 0, class 10, method
10). Then close the connection without another word, as HAProxy's ``tcp-check`` would.
That proves the broker process accepts and answers AMQP as the sessions reach it, not
merely that its port is open: a plain header to a TLS or ``proxy_protocol`` broker
would be refused, and the healthy backend marked down.

The price is a line in the broker's log per probe: RabbitMQ logs each accepted
connection and, when the peer goes before the handshake ends, a warning such as
``closing AMQP connection ... client unexpectedly closed TCP connection`` (older
versions: ``handshake_timeout``). Longer check intervals mean less log noise.

A probe returns None when the backend passed, else the reason it failed, worded for
BACKEND PRINT and the log (``connect refused 127.0.0.1:5999``).
"""

from __future__ import annotations

import errno
import socket
from typing import Final

import trio

from amqprouter.net import sockets
from amqprouter.net.resolver import Resolver
from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import PlainTransport, Transport, recv_some
from amqprouter.protocol import FrameReader, ProtocolError, constants
from amqprouter.routing import Backend
from amqprouter.session.connect import WrapBackend

#: Largest Connection.Start a probe reads (RabbitMQ's is about 500 bytes; the size
#: guard keeps a misbehaving peer from making a probe buffer without end).
START_FRAME_MAX: Final = 65536


async def probe_backend(
    resolver: Resolver, backend: Backend, within: float, *, wrap: WrapBackend | None = None
) -> str | None:
    """Check ``backend`` (all of it bounded by ``within`` seconds), its connections
    wrapped by ``wrap`` as a session's are (None: plain): None if it passed."""
    where = sockets.endpoint((backend.connect_host, backend.port))
    failures: list[str] = []
    with trio.move_on_after(within):
        try:
            addresses = await resolver.resolve(backend.connect_host, backend.port)
        except OSError as exc:
            return f"cannot resolve {backend.connect_host}: {exc.strerror or exc}"
        for family, address in addresses:
            where = sockets.endpoint(address)
            reason = await probe_address(family, address, backend, wrap)
            if reason is None:
                return None
            failures.append(reason)
        return "; ".join(failures) or f"{backend.connect_host} has no address"
    failures.append(f"no Connection.Start from {where} within {within * 1000:g} ms")
    return "; ".join(failures)


async def probe_address(
    family: socket.AddressFamily,
    address: tuple[str, int],
    backend: Backend | None = None,
    wrap: WrapBackend | None = None,
) -> str | None:
    """One address: None if it answered the protocol header with Connection.Start.

    Unbounded on its own: the caller holds the deadline.
    """
    where = sockets.endpoint(address)
    try:
        sock = await sockets.connect(address, family)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return f"connect refused {where}"
        return f"connect failed {where}: {exc.strerror or exc}"
    transport: Transport = PlainTransport(sock)
    try:
        if wrap is not None and backend is not None:
            try:
                transport = await wrap(backend, transport, None)
            except OSError as exc:  # the TLS handshake failed, or TLS EGRESS is unusable
                return f"{where}: {exc.strerror or exc}"
        await transport.send_all(constants.PROTOCOL_HEADER)
        reader = FrameReader(START_FRAME_MAX)
        while (frame := reader.next_frame()) is None:
            reader.feed(await recv_some(transport))
    except PeerGone:
        return f"{where} closed the connection before Connection.Start"
    except ProtocolError as exc:
        return f"{where} does not speak AMQP 0-9-1: {exc}"
    finally:
        transport.close()
    if frame.channel != 0 or frame.method_id != constants.CONNECTION_START:
        return (
            f"{where} answered with frame type {frame.frame_type} channel {frame.channel} "
            f"method {frame.method_id} instead of Connection.Start"
        )
    return None
