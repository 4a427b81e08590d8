"""The session's side of the auth service: what it asks, what it may be told.

A session with an authorizer (``AUTH SERVICE``; the server hands one to each new
session) asks it about its client after routing, before any broker connect. The
authorizer (server/auth.py) speaks HTTP and protobuf; the session only sees
``AuthQuery`` in and ``Allow`` or ``Deny`` out. ``ask`` bounds the wait and turns
anything but an answer into a ``Deny``: the service fails closed.

A client is unauthenticated: when the service itself fails, it is told only that the
service is unavailable (``UNAVAILABLE``); where the service is and what went wrong (its
URL, the error) are a ``Deny``'s ``detail``, for the router's log alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

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


#: The Close text a client gets when the auth service failed (unreachable, too slow,
#: a wrong answer): nothing of the service's address or error.
UNAVAILABLE: Final = "ACCESS_REFUSED - authentication service unavailable"


@attrs.frozen
class Deny:
    """Refuse the client. ``reason`` is what the client is told; ``detail``, when set,
    says what went wrong with the service (its URL, the error) and is only logged."""

    reason: str
    detail: str = ""


Decision = Allow | Deny
Authorize = Callable[[AuthQuery], Awaitable[Decision]]


async def ask(authorize: Authorize, query: AuthQuery, seconds: float) -> Decision:
    """``authorize``'s decision, or a ``Deny`` (``UNAVAILABLE``, the detail saying why)
    when there was none in time."""
    with trio.move_on_after(seconds):
        try:
            return await authorize(query)
        except Exception as exc:  # fail closed: whatever went wrong, no route
            return Deny(UNAVAILABLE, f"{_named(authorize)} failed: {type(exc).__name__}: {exc}")
    return Deny(UNAVAILABLE, f"{_named(authorize)} did not answer within {seconds:g}s")


def _named(authorize: Authorize) -> str:
    """The service as the log names it: the server hands sessions the bound
    ``AuthService.authorize``, whose object knows its URL."""
    url = getattr(getattr(authorize, "__self__", None), "url", None)
    return f"auth service {url}" if isinstance(url, str) else "auth service"
