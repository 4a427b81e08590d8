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
  ``connect_transport`` opens one resolved address (TCP, or the context's
  ``open_connection`` hook: a test's in-memory broker) and, when a ``WrapBackend``
  hook is given, lets it wrap the connection (a backend flagged TLS: the TLS
  handshake; SEND-PROXY: the PROXY header), all inside the one connect timeout that
  ``connect_backend`` holds per address.

Hooks report failure by raising ``OSError`` (``ssl.SSLError`` is one) or
``PeerGone``; the transport they were given is closed for them.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from amqprouter.net import sockets
from amqprouter.net.resolver import Resolver
from amqprouter.net.sockets import PeerGone, endpoint
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.routing import Backend
from amqprouter.session import metrics_hooks

if TYPE_CHECKING:
    from amqprouter.session.context import SessionContext

#: Finish opening an accepted client's transport (TLS handshake, PROXY header).
StartClient = Callable[[Transport], Awaitable[Transport]]
#: Wrap a freshly connected backend transport (TLS, PROXY header) as ``backend`` says;
#: the third argument is the client's address (a PROXY header names it).
WrapBackend = Callable[[Backend, Transport, tuple[str, int] | None], Awaitable[Transport]]
#: Open a connection to one resolved address (``open_tcp``; a test's hook gives memory).
OpenConnection = Callable[[socket.AddressFamily, tuple[str, int]], Awaitable[Transport]]
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


async def open_tcp(family: socket.AddressFamily, address: tuple[str, int]) -> Transport:
    """A TCP connection to ``address``: how a backend is reached unless told otherwise."""
    return PlainTransport(await sockets.connect(address, family))


async def connect_transport(
    backend: Backend,
    family: socket.AddressFamily,
    address: tuple[str, int],
    wrap: WrapBackend | None,
    client: tuple[str, int],
    open_connection: OpenConnection = open_tcp,
) -> Transport:
    """Connect to one resolved ``address`` of ``backend``, wrapped by ``wrap`` if given.

    Unbounded on its own: the caller holds the connect deadline. Raises OSError or
    PeerGone; nothing is left open on failure or cancellation.
    """
    transport = await open_connection(family, address)
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
    failed: Callable[[Backend, str], None] = metrics_hooks.NO_EVENTS.connect_failed,
    open_connection: OpenConnection = open_tcp,
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
                failed(backend, metrics_hooks.DNS)
                return [f"{backend.label}: {exc}"]
    if not addresses:
        failed(backend, metrics_hooks.DNS)
        return [f"{backend.label}: resolution timed out"]
    for family, address in addresses:
        with trio.move_on_after(per_attempt):
            try:
                return await connect_transport(
                    backend, family, address, wrap, client, open_connection
                )
            except (OSError, PeerGone) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                failures.append(f"{endpoint(address)}: {reason}")
                failed(backend, metrics_hooks.failure_reason(exc))
                log.warning("broker connect failed", address=endpoint(address), error=str(exc))
                continue
        failures.append(f"{endpoint(address)}: timed out after {per_attempt}s")
        failed(backend, metrics_hooks.TIMEOUT)
        log.warning("broker connect timed out", address=endpoint(address))
    return failures


async def connect_first(
    context: SessionContext,
    candidates: Sequence[Backend],
    client: tuple[str, int],
    log: Any,  # the session's bound logger
    take_primed: TakePrimed | None,
) -> tuple[Backend, Transport, bool] | list[str]:
    """Failover: the first of ``candidates`` (in order) that connects, with its transport
    and whether it is a primed one (greeted already), else one failure text per attempt.

    The ``context`` gives the resolver, the per-attempt connect timeout, the wrap hook
    and how a connection is opened; each backend's outcome is reported to its health
    registry (a primed connection counts as a connect that succeeded) and each failed
    attempt to its events. ``client`` is the client's address (a PROXY header names it).
    """
    health = context.health
    per_attempt = context.settings.timeouts.connect
    failures: list[str] = []
    for backend in candidates:
        primed = None if take_primed is None else take_primed(backend)
        if primed is not None:
            if health is not None:
                health.connect_succeeded(backend.name)
            return backend, primed, True
        outcome = await connect_backend(
            context.resolver,
            backend,
            per_attempt,
            context.wrap_backend,
            client,
            log,
            context.events.connect_failed,
            context.open_connection,
        )
        if isinstance(outcome, list):
            failures += outcome
            if health is not None:
                health.connect_failed(backend.name, "; ".join(outcome))
            continue
        if health is not None:
            health.connect_succeeded(backend.name)
        return backend, outcome, False
    return failures
