"""The session's side of the auth service: what it asks, what it may be told.

A session with an authorizer (``AUTH SERVICE``; the server hands one to each new
session) asks it about its client after routing, before any broker connect. The
authorizer (server/auth.py) speaks HTTP and protobuf; the session only sees
``AuthQuery`` in and ``Allow`` or ``Deny`` out. ``ask`` bounds the wait and turns
anything but an answer into a ``Deny``: the service fails closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio


@attrs.frozen
class AuthQuery:
    """What the auth service is told about one client (amqpprox's ``AuthRequest``)."""

    vhost: str
    mechanism: str
    credentials: bytes
    client_host: str
    connection_name: str


@attrs.frozen
class Allow:
    """Route the client; with ``sasl``, the broker gets that mechanism and response
    instead of the client's."""

    reason: str = ""
    sasl: tuple[str, bytes] | None = None


@attrs.frozen
class Deny:
    reason: str


Decision = Allow | Deny
Authorize = Callable[[AuthQuery], Awaitable[Decision]]


async def ask(authorize: Authorize, query: AuthQuery, seconds: float) -> Decision:
    """``authorize``'s decision, or a ``Deny`` saying why there was none in time."""
    with trio.move_on_after(seconds):
        try:
            return await authorize(query)
        except Exception as exc:  # fail closed: whatever went wrong, no route
            return Deny(f"auth service failed: {type(exc).__name__}: {exc}")
    return Deny(f"auth service did not answer within {seconds:g}s")
