"""The auth service client (``AUTH SERVICE host port target``), amqpprox's HTTP auth
intercept: for each client, one HTTP/1.1 POST of a protobuf ``AuthRequest`` to
``http://host:port/target``, answered by a protobuf ``AuthResponse``.

The schema is amqpprox's (authproto/auth.proto here, package
``Bloomberg.amqpprox.authproto``), so a service written for amqpprox answers the
router unchanged. As amqpprox does, each request opens a new connection. Unlike
amqpprox, a non-2xx status is a DENY (amqpprox reads the body whatever the status).

Fail closed: a service that cannot be reached, answers anything but a 2xx status with
an ``AuthResponse``, or answers too late (the session's ``ask`` bounds the wait with
--auth-timeout) denies the client. The client is told only ``UNAVAILABLE``: the
service's URL and what went wrong are the ``Deny``'s detail, which the session logs.
"""

from __future__ import annotations

from typing import Final

import attrs
import httpx
from google.protobuf.message import DecodeError

from amqprouter import __version__
from amqprouter.server.authproto import auth_pb2
from amqprouter.session.auth import UNAVAILABLE, Allow, AuthQuery, Decision, Deny

#: Longer than any AuthResponse a service has reason to send (a reason and one set of
#: credentials): a body past it is not one.
MAX_RESPONSE_BYTES: Final = 64 * 1024
USER_AGENT: Final = f"amqprouter/{__version__}"
_HEADERS: Final = {"Content-Type": "application/octet-stream", "User-Agent": USER_AGENT}
#: A DENY without a reason of the service's own: the client is told this.
DENIED: Final = "ACCESS_REFUSED - denied by the authentication service"
#: A short string: the longest SASL mechanism a StartOk can carry.
_MECHANISM_MAX: Final = 255


@attrs.frozen
class AuthService:
    """Where the auth service is; ``authorize`` is what each new session is given."""

    host: str
    port: int
    target: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.target}"

    async def authorize(self, query: AuthQuery) -> Decision:
        request = auth_pb2.AuthRequest(
            vhostName=query.vhost,
            authData=auth_pb2.SASL(authMechanism=query.mechanism, credentials=query.credentials),
            clientHostname=query.client_host,
            connectionName=query.connection_name,
        )
        # No proxy from the environment, no TLS (http:// only), no redirects, and no
        # timeout of httpx's own: the session's --auth-timeout bounds the whole request.
        try:
            async with (
                httpx.AsyncClient(
                    verify=False, trust_env=False, follow_redirects=False, timeout=None
                ) as client,
                client.stream(
                    "POST", self.url, content=request.SerializeToString(), headers=_HEADERS
                ) as response,
            ):
                if not 200 <= response.status_code < 300:
                    return _failed(f"auth service {self.url} answered HTTP {response.status_code}")
                body = bytearray()
                # Read to the end even past the limit (without keeping it): httpx's
                # nested async generators warn when left unfinished. --auth-timeout
                # bounds an endless body.
                async for chunk in response.aiter_bytes():
                    if len(body) <= MAX_RESPONSE_BYTES:
                        body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    return _failed(
                        f"auth service {self.url} answered over {MAX_RESPONSE_BYTES} bytes"
                    )
        except httpx.HTTPError as exc:
            return _failed(f"auth service {self.url} failed: {type(exc).__name__}: {exc}")
        return decision(bytes(body), self.url)


def decision(body: bytes, url: str) -> Decision:
    """The ``Allow`` or ``Deny`` an ``AuthResponse`` body says; a ``Deny`` if it is not one.

    An empty body is a valid AuthResponse: proto3 writes no field for ALLOW (0) and an
    empty reason, so "ALLOW, no reason, no credentials" is zero bytes.
    """
    response = auth_pb2.AuthResponse()
    try:
        response.ParseFromString(body)
    except DecodeError as exc:
        return _failed(f"auth service {url} answered something not an AuthResponse: {exc}")
    reason = response.reason
    if response.result == auth_pb2.AuthResponse.DENY:
        if reason:
            return Deny(reason)
        return Deny(DENIED, f"auth service {url} answered DENY without a reason")
    if response.result != auth_pb2.AuthResponse.ALLOW:
        return _failed(f"auth service {url} answered an unknown result {response.result}")
    if not response.HasField("authData"):
        return Allow(reason)
    mechanism = response.authData.authMechanism
    if not mechanism or len(mechanism.encode()) > _MECHANISM_MAX:
        return _failed(
            f"auth service {url} answered ALLOW with a SASL mechanism that is empty or "
            f"over {_MECHANISM_MAX} bytes"
        )
    return Allow(reason, (mechanism, response.authData.credentials))


def _failed(detail: str) -> Deny:
    """The service failed: the client is told it is unavailable, the log what went wrong."""
    return Deny(UNAVAILABLE, detail)
