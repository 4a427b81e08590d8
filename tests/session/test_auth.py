"""The session's auth hook, in process: a real HTTP auth service, a fake broker that
records the StartOk it is sent, and hand-made clients (with and without the
authentication_failure_close capability)."""

from __future__ import annotations

from typing import Any

import attrs
import trio
from pamqp import commands

from amqprouter.control.controller import conn_line
from amqprouter.observe.prometheus import metrics_text
from amqprouter.observe.stats import StatsCollector
from amqprouter.protocol import constants
from amqprouter.server.auth import AuthService
from amqprouter.server.authproto import auth_pb2
from amqprouter.session import Session
from amqprouter.session.auth import UNAVAILABLE
from tests.auth_service import AuthServiceForTests, auth_service
from tests.session.wire import (
    FAST,
    FakeBroker,
    Peer,
    connect_client_side,
    fake_broker,
    open_and_idle,
    router,
    wait_no_sessions,
)

ALLOW = auth_pb2.AuthResponse.ALLOW
DENY = auth_pb2.AuthResponse.DENY


async def _open(port: int, *, capability: bool, name: str = "auth-test") -> tuple[Peer, Any]:
    """A client up to Open; the router's answer to it (None: the socket was closed)."""
    peer = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
    await peer.send(constants.PROTOCOL_HEADER)
    assert isinstance(await peer.read_method(), commands.Connection.Start)
    client_properties: dict[str, Any] = {"connection_name": name}
    if capability:
        client_properties["capabilities"] = {"authentication_failure_close": True}
    await peer.send_method(
        commands.Connection.StartOk(
            client_properties=client_properties,
            mechanism="PLAIN",
            response="\0alice\0secret",
        )
    )
    assert isinstance(await peer.read_method(), commands.Connection.Tune)
    await peer.send_method(commands.Connection.TuneOk(channel_max=2047, frame_max=131072))
    await peer.send_method(commands.Connection.Open(virtual_host="/"))
    return peer, await peer.read_method()


def _use(server_auth: AuthServiceForTests) -> AuthService:
    return AuthService("127.0.0.1", server_auth.port, server_auth.target)


async def test_allow_with_credentials_rewrites_the_start_ok() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(
            result=ALLOW,
            reason="alice is guest",
            authData=auth_pb2.SASL(authMechanism="PLAIN", credentials=b"\0guest\0guest"),
        )
        async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=True)
            assert isinstance(answer, commands.Connection.OpenOk)
    (start_ok,) = broker.start_oks
    assert (start_ok.mechanism, start_ok.response) == ("PLAIN", "\0guest\0guest")
    assert start_ok.client_properties["amqprouter_auth"] == "alice is guest"
    assert start_ok.client_properties["connection_name"] == "auth-test"
    assert str(start_ok.client_properties["amqprouter_client"]).startswith("127.0.0.1:")
    (received,) = service.received
    assert received.request.vhostName == "/"
    assert received.request.authData.credentials == b"\0alice\0secret"
    assert received.request.clientHostname == "127.0.0.1"
    assert received.request.connectionName == "auth-test"


async def test_allow_without_credentials_keeps_the_clients() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(result=ALLOW)
        async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=False)
            assert isinstance(answer, commands.Connection.OpenOk)
    (start_ok,) = broker.start_oks
    assert start_ok.response == "\0alice\0secret"
    assert "amqprouter_auth" not in start_ok.client_properties


async def test_deny_with_the_capability_is_close_403_and_no_broker_connect() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(result=DENY, reason="x" * 300)
        async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
            server.auth = _use(service)
            ended: list[Session] = []
            server.session_ended.append(ended.append)
            collector = StatsCollector(server.sessions, 1.0)
            server.session_ended.append(collector.session_ended)
            peer, answer = await _open(port, capability=True)
            assert isinstance(answer, commands.Connection.Close)
            assert (answer.reply_code, answer.class_id, answer.method_id) == (403, 10, 11)
            assert answer.reply_text == "x" * 255  # a short string
            await peer.send_method(commands.Connection.CloseOk())
            assert await peer.at_eof()
            await wait_no_sessions(server)
            snapshot = collector.collect()
    assert broker.accepted == [], "a denied client never reaches a broker"
    (session,) = ended
    assert session.auth_denied
    assert " authDenied=Y " in conn_line(session)
    assert snapshot.overall.auth_denied == 1
    assert snapshot.vhosts["/"].auth_denied == 1
    assert collector.collect().overall.auth_denied == 0, "counted in its interval only"
    # /metrics counts it since start (a counter never goes down), before any broker.
    page = metrics_text(collector, listeners=1)
    assert "\n# TYPE amqprouter_connections_auth_denied_total counter\n" in page
    assert '\namqprouter_connections_auth_denied_total{vhost="/",backend=""} 1\n' in page


async def test_deny_without_the_capability_closes_the_socket() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(result=DENY, reason="no")
        async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=False)
            assert answer is None, "no Close: the socket is just closed"
            await wait_no_sessions(server)
    assert broker.accepted == []


async def test_a_slow_service_is_denied_after_the_auth_timeout() -> None:
    with auth_service() as service:
        service.hang = True
        async with (
            fake_broker(open_and_idle) as broker,
            router(broker.port, timeouts=attrs.evolve(FAST, auth=0.3)) as (server, port),
        ):
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=True)
    assert isinstance(answer, commands.Connection.Close)
    # The client is told the service is unavailable, nothing of where it is.
    assert (answer.reply_code, answer.reply_text) == (403, UNAVAILABLE)
    assert broker.accepted == []


async def test_always_allow_asks_nothing_and_applies_to_new_sessions() -> None:
    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(result=DENY, reason="no")
        async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
            _peer, answer = await _open(port, capability=True)
            assert isinstance(answer, commands.Connection.OpenOk)
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=True)
            assert isinstance(answer, commands.Connection.Close)
            server.auth = None
            _peer, answer = await _open(port, capability=True)
            assert isinstance(answer, commands.Connection.OpenOk)
    assert len(service.received) == 1


async def test_credentials_too_large_for_the_start_ok_are_a_320() -> None:
    received: list[bytes] = []

    async def read_all(peer: Peer, broker: FakeBroker) -> None:
        received.append(await peer.read_raw(1 << 20))

    with auth_service() as service:
        service.answer = lambda r: auth_pb2.AuthResponse(
            result=ALLOW, authData=auth_pb2.SASL(authMechanism="PLAIN", credentials=b"x" * 5000)
        )
        async with fake_broker(read_all) as broker, router(broker.port) as (server, port):
            server.auth = _use(service)
            _peer, answer = await _open(port, capability=True)
    assert isinstance(answer, commands.Connection.Close)
    assert answer.reply_code == 320
    assert "auth service's credentials is over 4096 bytes" in answer.reply_text
    assert received == [b""], "nothing was sent that the broker would reset on"
