"""The auth service client against a real HTTP service speaking the real protobuf."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from amqprouter.server.auth import DENIED, MAX_RESPONSE_BYTES, USER_AGENT, AuthService, decision
from amqprouter.server.authproto import auth_pb2
from amqprouter.session.auth import UNAVAILABLE, Allow, AuthQuery, Deny, ask
from tests.auth_service import AuthServiceForTests, auth_service
from tests.brokers import free_port

QUERY = AuthQuery(
    vhost="/prod",
    mechanism="PLAIN",
    credentials=b"\0alice\0secret",
    client_host="10.1.2.3",
    connection_name="orders",
)
ALLOW = auth_pb2.AuthResponse.ALLOW
DENY = auth_pb2.AuthResponse.DENY


def _client(service: AuthServiceForTests) -> AuthService:
    return AuthService("127.0.0.1", service.port, service.target)


async def test_request_is_the_protobuf_auth_request_posted_to_the_target() -> None:
    with auth_service() as service:
        assert await _client(service).authorize(QUERY) == Allow("welcome")
    (received,) = service.received
    assert received.path == "/auth"
    assert received.headers["Content-Type"] == "application/octet-stream"
    assert received.headers["User-Agent"] == USER_AGENT
    assert received.headers["Host"] == f"127.0.0.1:{service.port}"
    request = received.request
    assert (request.vhostName, request.clientHostname, request.connectionName) == (
        "/prod",
        "10.1.2.3",
        "orders",
    )
    assert (request.authData.authMechanism, request.authData.credentials) == (
        "PLAIN",
        b"\0alice\0secret",
    )


async def test_deny_carries_the_services_reason() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(result=DENY, reason="not on Sundays")
        assert await _client(service).authorize(QUERY) == Deny("not on Sundays")
        service.answer = lambda r: auth_pb2.AuthResponse(result=DENY)
        result = await _client(service).authorize(QUERY)
    # Without a reason of the service's: a generic text; the URL is the log's only.
    assert result == Deny(
        DENIED, f"auth service {_client(service).url} answered DENY without a reason"
    )


async def test_allow_with_sasl_gives_the_new_credentials() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(
            result=ALLOW,
            reason="mapped",
            authData=auth_pb2.SASL(authMechanism="PLAIN", credentials=b"\0guest\0guest"),
        )
        assert await _client(service).authorize(QUERY) == Allow(
            "mapped", ("PLAIN", b"\0guest\0guest")
        )


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (500, auth_pb2.AuthResponse(result=ALLOW).SerializeToString(), "answered HTTP 500"),
        (404, b"", "answered HTTP 404"),
        (302, b"", "answered HTTP 302"),
        (200, b"<html>not protobuf</html>", "not an AuthResponse"),
        (200, b"\x08\x07", "unknown result 7"),
        (200, b"x" * (MAX_RESPONSE_BYTES + 1), f"over {MAX_RESPONSE_BYTES} bytes"),
        (
            200,
            auth_pb2.AuthResponse(
                result=ALLOW, authData=auth_pb2.SASL(authMechanism="P" * 256)
            ).SerializeToString(),
            "mechanism that is empty or over 255 bytes",
        ),
        (
            200,
            auth_pb2.AuthResponse(
                result=ALLOW, authData=auth_pb2.SASL(credentials=b"x")
            ).SerializeToString(),
            "mechanism that is empty",
        ),
    ],
)
async def test_a_broken_answer_is_a_deny(status: int, body: bytes, says: str) -> None:
    with auth_service() as service:
        service.answer = lambda r: (status, body)
        result = await _client(service).authorize(QUERY)
    # The client is told the service is unavailable; what went wrong, and where, is the
    # detail (for the log).
    assert isinstance(result, Deny) and result.reason == UNAVAILABLE
    assert says in result.detail and _client(service).url in result.detail


async def test_a_service_that_is_down_is_a_deny() -> None:
    port = free_port()
    result = await AuthService("127.0.0.1", port, "/auth").authorize(QUERY)
    assert isinstance(result, Deny) and result.reason == UNAVAILABLE
    assert f"auth service http://127.0.0.1:{port}/auth failed: ConnectError" in result.detail


async def test_a_service_that_does_not_answer_in_time_is_a_deny() -> None:
    with auth_service() as service:
        service.hang = True
        result = await ask(_client(service).authorize, QUERY, 0.2)
    # The bound AuthService.authorize names its URL in the detail.
    assert result == Deny(
        UNAVAILABLE, f"auth service {_client(service).url} did not answer within 0.2s"
    )


async def test_an_authorizer_that_raises_is_a_deny() -> None:
    async def broken(query: AuthQuery) -> Allow:
        raise RuntimeError("boom")

    assert await ask(broken, QUERY, 5) == Deny(
        UNAVAILABLE, "auth service failed: RuntimeError: boom"
    )


async def test_ask_returns_in_time_on_trio_clock(autojump_clock: MockClock) -> None:
    async def never(query: AuthQuery) -> Allow:
        await trio.sleep_forever()
        raise AssertionError

    start = trio.current_time()
    assert await ask(never, QUERY, 5.0) == Deny(
        UNAVAILABLE, "auth service did not answer within 5s"
    )
    assert trio.current_time() - start == pytest.approx(5.0)


def test_an_empty_body_is_allow_as_the_schema_says() -> None:
    # proto3 writes nothing for ALLOW (0) and an empty reason.
    assert decision(b"", "http://x/auth") == Allow("")


def test_ipv6_host_is_bracketed_in_the_url() -> None:
    assert AuthService("::1", 8080, "/auth").url == "http://[::1]:8080/auth"
    assert AuthService("auth.example", 80, "/a").url == "http://auth.example:80/a"
