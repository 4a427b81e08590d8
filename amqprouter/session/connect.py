"""Opening the transports a session forwards over: the client's start, a backend's connect.

Both are the single places a new kind of transport plugs in:

* **Client side.** The listener hands the session a ``Transport`` for the accepted
  socket (``PlainTransport`` for a plain listener). A listener whose transport still
  has work to do before AMQP bytes flow (a TLS handshake, reading a PROXY header)
  also gives a ``StartClient`` hook; the session awaits it first thing, inside the
  client handshake timeout, and forwards over the transport it returns.
* **Backend side.** ``connect_first`` fails over across a vhost's candidate backends
  in order, taking a primed connection where the pool has one (primed.py),
  ``connect_backend`` across one backend's addresses, and
  ``connect_transport`` opens TCP to one resolved address and, when a ``WrapBackend``
  hook is given, lets it wrap the connection (a backend flagged TLS: the TLS
  handshake; SEND-PROXY: the PROXY header), all inside the one connect timeout that
  ``connect_backend`` holds per address.

Hooks report failure by raising ``OSError`` (``ssl.SSLError`` is one) or
``PeerGone``; the transport they were given is closed for them.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from amqprouter.net import sockets
from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.routing import Backend, Resolver
from amqprouter.routing.health import HealthRegistry
from amqprouter.session import events

#: Finish opening an accepted client's transport (TLS handshake, PROXY header).
StartClient = Callable[[Transport], Awaitable[Transport]]
#: Wrap a freshly connected backend transport (TLS, PROXY header) as ``backend`` says;
#: the third argument is the client's address (a PROXY header names it).
WrapBackend = Callable[[Backend, Transport, tuple[str, int]], Awaitable[Transport]]
#: A primed connection to a backend, greeted already, or None (server/primed.py).
TakePrimed = Callable[[Backend], Transport | None]


async def start_client(transport: Transport, start: StartClient | None) -> Transport:
    """The client's transport ready for AMQP bytes; unbounded (the caller holds the deadline)."""
    if start is None:
        return transport
    try:
        return await start(transport)
    except BaseException:
        transport.close()
        raise


async def connect_transport(
    backend: Backend,
    family: socket.AddressFamily,
    address: tuple[str, int],
    wrap: WrapBackend | None,
    client: tuple[str, int],
) -> Transport:
    """Connect to one resolved ``address`` of ``backend``, wrapped by ``wrap`` if given.

    Unbounded on its own: the caller holds the connect deadline. Raises OSError or
    PeerGone; nothing is left open on failure or cancellation.
    """
    transport: Transport = PlainTransport(await sockets.connect(address, family))
    if wrap is None:
        return transport
    try:
        return await wrap(backend, transport, client)
    except BaseException:
        transport.close()
        raise


async def connect_backend(
    resolver: Resolver,
    backend: Backend,
    per_attempt: float,
    wrap: WrapBackend | None,
    client: tuple[str, int],
    log: Any,  # the session's bound logger
    failed: Callable[[Backend, str], None] = events.NO_EVENTS.connect_failed,
) -> Transport | list[str]:
    """Resolve ``backend`` and try its addresses in order, each bounded by ``per_attempt`` seconds.

    Returns the first transport that opened, else one failure text per attempt.
    """
    failures: list[str] = []
    # An address or a cached name needs no lookup, nor a cancel scope to bound one.
    addresses = resolver.known(backend.connect_host, backend.port) or []
    if not addresses:
        with trio.move_on_after(per_attempt):
            try:
                addresses = await resolver.resolve(backend.connect_host, backend.port)
            except OSError as exc:
                log.error("cannot resolve backend", backend=backend.label, error=str(exc))
                failed(backend, events.DNS)
                return [f"{backend.label}: {exc}"]
    if not addresses:
        failed(backend, events.DNS)
        return [f"{backend.label}: resolution timed out"]
    for family, address in addresses:
        with trio.move_on_after(per_attempt):
            try:
                return await connect_transport(backend, family, address, wrap, client)
            except (OSError, PeerGone) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                failures.append(f"{address[0]}:{address[1]}: {reason}")
                failed(backend, events.failure_reason(exc))
                log.warning("broker connect failed", address=endpoint(address), error=str(exc))
                continue
        failures.append(f"{address[0]}:{address[1]}: timed out after {per_attempt}s")
        failed(backend, events.TIMEOUT)
        log.warning("broker connect timed out", address=endpoint(address))
    return failures


async def connect_first(
    candidates: Sequence[Backend],
    resolver: Resolver,
    per_attempt: float,
    wrap: WrapBackend | None,
    client: tuple[str, int],
    health: HealthRegistry | None,
    log: Any,  # the session's bound logger
    take_primed: TakePrimed | None = None,
    failed: Callable[[Backend, str], None] = events.NO_EVENTS.connect_failed,
) -> tuple[Backend, Transport, bool] | list[str]:
    """Failover: the first of ``candidates`` (in order) that connects, with its transport
    and whether it is a primed one (greeted already), else one failure text per attempt.
    Each backend's outcome is reported to ``health`` (a primed connection counts as a
    connect that succeeded) and each failed attempt to ``failed``.
    """
    failures: list[str] = []
    for backend in candidates:
        primed = None if take_primed is None else take_primed(backend)
        if primed is not None:
            if health is not None:
                health.connect_succeeded(backend.name)
            return backend, primed, True
        outcome = await connect_backend(resolver, backend, per_attempt, wrap, client, log, failed)
        if isinstance(outcome, list):
            failures += outcome
            if health is not None:
                health.connect_failed(backend.name, "; ".join(outcome))
            continue
        if health is not None:
            health.connect_succeeded(backend.name)
        return backend, outcome, False
    return failures
