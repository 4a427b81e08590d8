"""PROXY protocol in and out, and allow-lists, on an in-process router over loopback.

The real-peer proofs (HAProxy in front, RabbitMQ with proxy_protocol behind) are in
tests/integration/test_proxy_protocol.py; here the fake broker shows the exact bytes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import structlog.testing
import trio
from pamqp import commands

from amqprouter.observe.prometheus import metrics_text
from amqprouter.observe.stats import StatsCollector
from amqprouter.protocol import constants
from amqprouter.protocol.proxy_header import V2_MAX_PAYLOAD, V2_SIGNATURE, build_v1, build_v2, parse
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server, edges
from amqprouter.server.admission import ListenOptions, RefusalLog
from amqprouter.session import SessionSettings
from tests.session.wire import (
    FAST,
    WAIT,
    Behaviour,
    FakeBroker,
    Peer,
    broker_handshake,
    connect_client_side,
    fake_broker,
    open_and_idle,
    wait_no_sessions,
)

#: The balancers of these tests' ACCEPT-PROXY listeners: the test process itself.
LOOPBACK = ("127.0.0.0/8", "::1/128")


@asynccontextmanager
async def edge_router(
    broker_port: int, options: ListenOptions, *, host: str = "127.0.0.1", send_proxy: int = 0
) -> AsyncIterator[tuple[Server, int]]:
    backend = Backend("fake", "none", "127.0.0.1", broker_port, send_proxy=send_proxy)
    server = Server(SessionSettings(timeouts=FAST), RoutingTable.single(backend))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = await server.listen(0, host, options=options)
        try:
            yield server, port
        finally:
            nursery.cancel_scope.cancel()


async def connect(port: int, host: str = "127.0.0.1") -> Peer:
    return connect_client_side(await trio.open_tcp_stream(host, port))


async def handshake_to_open(peer: Peer) -> None:
    """The client's side after its protocol header, up to Open-Ok."""
    assert isinstance(await peer.read_method(), commands.Connection.Start)
    await peer.send_method(
        commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
        )
    )
    assert isinstance(await peer.read_method(), commands.Connection.Tune)
    await peer.send_method(commands.Connection.TuneOk(channel_max=2047, frame_max=131072))
    await peer.send_method(commands.Connection.Open(virtual_host="/"))
    assert isinstance(await peer.read_method(), commands.Connection.OpenOk)


async def received_nothing(peer: Peer) -> bool:
    """True when the router closed the connection without sending a byte."""
    with trio.fail_after(WAIT):
        try:
            return await peer.stream.receive_some(100) == b""
        except trio.BrokenResourceError:  # a reset also sends nothing
            return True


# --------------------------------------------------------------------------- #
# PROXY in
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "header",
    [
        build_v1(("203.0.113.7", 41000), ("127.0.0.1", 5672)),
        build_v2(("203.0.113.7", 41000), ("127.0.0.1", 5672)),
        build_v2(("2001:db8::7", 41000), ("::1", 5672)),
    ],
)
async def test_header_and_amqp_in_one_segment(header: bytes) -> None:
    """The AMQP header sent with the PROXY header reaches the session, not lost."""
    source = parse(header)
    assert source is not None and source.header.source is not None
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK)) as (server, port),
    ):
        peer = await connect(port)
        await peer.send(header + constants.PROTOCOL_HEADER)
        await handshake_to_open(peer)
        (session,) = server.sessions.values()
        assert session.client_address == source.header.source


async def test_header_split_across_reads() -> None:
    header = build_v1(("198.51.100.1", 1234), ("127.0.0.1", 5672))
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK)) as (server, port),
    ):
        peer = await connect(port)
        peer.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (header[:3], header[3:20], header[20:], constants.PROTOCOL_HEADER):
            await peer.send(piece)
            await trio.sleep(0.02)  # not synchronisation: makes separate segments likely
        await handshake_to_open(peer)
        (session,) = server.sessions.values()
        assert session.client_address == ("198.51.100.1", 1234)


async def test_local_header_keeps_the_balancers_address() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK)) as (server, port),
    ):
        peer = await connect(port)
        await peer.send(local + constants.PROTOCOL_HEADER)
        await handshake_to_open(peer)
        (session,) = server.sessions.values()
        assert session.client_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (constants.PROTOCOL_HEADER, "invalid PROXY header: not a PROXY protocol header"),
        (b"PROXY TCP4 " + b"9" * 120, "longer than 107 bytes"),
        (V2_SIGNATURE + b"\x21\x11" + (V2_MAX_PAYLOAD + 1).to_bytes(2, "big"), "is over"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "is not a port number"),
        # An undefined family byte is not taken as UNSPEC; a TLV may not run past the end.
        (V2_SIGNATURE + b"\x21\x51\x00\x0c" + bytes(12), "0x51 is not defined"),
        (
            build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))[:14]
            + (12 + 7).to_bytes(2, "big")
            + build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))[16:]
            + b"\x05\x00\x09abcd",
            "TLV value runs past",
        ),
        (b"PROXY TCP4 1.2.3.4", None),  # and then silence: the handshake timeout
    ],
)
async def test_a_bad_header_closes_the_connection_logged_once(
    data: bytes, error: str | None
) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK)) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            peer = await connect(port)
            await peer.send(data)
            assert await received_nothing(peer)
            await wait_no_sessions(server)
        assert broker.accepted == []
        lines = [e for e in logs if e["log_level"] in ("info", "warning", "error")]
        if error is None:
            assert [e["event"] for e in lines] == ["client handshake timed out"]
        else:
            assert [e["event"] for e in lines] == ["client transport failed to start"]
            assert error in lines[0]["error"]


async def test_the_header_has_its_own_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edges, "PROXY_HEADER_TIMEOUT", 0.2)
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK)) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            peer = await connect(port)
            assert await received_nothing(peer)
            await wait_no_sessions(server)
        (line,) = [e for e in logs if e["log_level"] != "debug"]
        assert line["event"] == "client transport failed to start"
        assert "no PROXY header within 0.2s" in line["error"]


# --------------------------------------------------------------------------- #
# PROXY out
# --------------------------------------------------------------------------- #


def reading_proxy_header(seen: list[bytes]) -> Behaviour:
    """A broker behaviour: read a PROXY header byte by byte (so nothing after it), then
    the AMQP handshake."""

    async def behaviour(peer: Peer, broker: FakeBroker) -> None:
        data = b""
        while parse(data) is None:
            data += await peer.stream.receive_some(1)
        seen.append(data)
        await broker_handshake(peer, broker)
        await trio.sleep_forever()

    return behaviour


@pytest.mark.parametrize("version", [1, 2])
async def test_send_proxy_names_the_proxied_client_and_the_backend(version: int) -> None:
    """Source: the client a PROXY-in header named; destination: the broker connected to."""
    client = ("203.0.113.9", 50123)
    seen: list[bytes] = []
    async with (
        fake_broker(reading_proxy_header(seen)) as broker,
        edge_router(broker.port, ListenOptions(proxy_from=LOOPBACK), send_proxy=version) as (
            _server,
            port,
        ),
    ):
        expected = (build_v1 if version == 1 else build_v2)(client, ("127.0.0.1", broker.port))
        peer = await connect(port)
        await peer.send(build_v2(client, ("127.0.0.1", port)) + constants.PROTOCOL_HEADER)
        await handshake_to_open(peer)
        assert seen == [expected]


async def test_send_proxy_from_a_plain_listener_names_the_socket_peer() -> None:
    seen: list[bytes] = []
    async with (
        fake_broker(reading_proxy_header(seen)) as broker,
        edge_router(broker.port, ListenOptions(), send_proxy=1) as (_server, port),
    ):
        peer = await connect(port)
        await peer.send(constants.PROTOCOL_HEADER)
        await handshake_to_open(peer)
        local_port = peer.stream.socket.getsockname()[1]
        assert seen == [f"PROXY TCP4 127.0.0.1 127.0.0.1 {local_port} {broker.port}\r\n".encode()]


# --------------------------------------------------------------------------- #
# allow-lists
# --------------------------------------------------------------------------- #


async def test_a_client_outside_the_list_gets_nothing_and_is_counted_and_logged_once() -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(allow=("10.0.0.0/8",))) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                peer = await connect(port)
                await peer.send(constants.PROTOCOL_HEADER)
                assert await received_nothing(peer)
        assert server.refusals.total == 3
        assert server.sessions == {}
        page = metrics_text(StatsCollector({}, 1.0), listeners=1, refused=server.refusals.total)
        assert "\namqprouter_connections_refused_total 3\n" in page
        refused = [e for e in logs if e["event"] == "client refused: address not allowed"]
        assert len(refused) == 1, "at most one line per second per address"
        assert refused[0]["client"].startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("host", "allow", "admitted"),
    [
        ("127.0.0.1", ("127.0.0.0/8",), True),
        ("127.0.0.1", ("::1/128",), False),
        ("::1", ("::1/128",), True),
        ("::1", ("10.0.0.0/8", "127.0.0.0/8"), False),
        ("::1", ("10.0.0.0/8", "::1/128"), True),
    ],
)
async def test_ipv4_and_ipv6_loopback_lists(
    host: str, allow: tuple[str, ...], admitted: bool
) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, ListenOptions(allow=allow), host=host) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            peer = await connect(port, host)
            await peer.send(constants.PROTOCOL_HEADER)
            if admitted:
                await handshake_to_open(peer)
                assert server.refusals.total == 0
            else:
                assert await received_nothing(peer)
                assert server.refusals.total == 1
        if not admitted:
            # The log line names the client as host and port that can be told apart:
            # an IPv6 host in brackets ('[::1]:60603', not '::1:60603').
            (line,) = [e for e in logs if e["event"] == "client refused: address not allowed"]
            assert re.fullmatch(
                r"\[::1\]:\d+" if host == "::1" else r"127\.0\.0\.1:\d+", line["client"]
            )


@pytest.mark.parametrize(("source", "admitted"), [("10.1.2.3", False), ("127.0.0.5", True)])
async def test_with_accept_proxy_the_headers_source_is_checked(source: str, admitted: bool) -> None:
    options = ListenOptions(proxy_from=LOOPBACK, allow=("127.0.0.0/8",))
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, options) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            peer = await connect(port)
            await peer.send(build_v1((source, 1), ("127.0.0.1", port)) + constants.PROTOCOL_HEADER)
            if admitted:
                await handshake_to_open(peer)
            else:
                assert await received_nothing(peer)
                await wait_no_sessions(server)
        assert server.refusals.total == (0 if admitted else 1)
        if not admitted:
            (line,) = [e for e in logs if e["log_level"] != "debug"]
            assert line["event"] == "client refused: address not allowed"
            assert line["client"] == f"{source}:1"


async def connect_from(source: str, port: int) -> Peer:
    """A client whose socket is bound to ``source`` (a loopback alias on Linux)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return connect_client_side(trio.SocketStream(sock))


async def test_only_a_from_peer_may_send_a_proxy_header() -> None:
    """The attack: a direct client names an allowed address in its own header. The TCP
    peer is checked against FROM before a byte is read, so it never gets a session,
    while the balancer (127.0.0.2) is served with the same header."""
    options = ListenOptions(proxy_from=("127.0.0.2/32",), allow=("10.0.0.0/8",))
    forged = build_v1(("10.66.66.66", 1), ("127.0.0.1", 5672)) + constants.PROTOCOL_HEADER
    async with (
        fake_broker(open_and_idle) as broker,
        edge_router(broker.port, options) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            attacker = await connect_from("127.0.0.1", port)
            await attacker.send(forged)
            assert await received_nothing(attacker)
        assert server.refusals.total == 1 and not server.sessions
        (line,) = [e for e in logs if e["log_level"] != "debug"]
        assert line["event"] == (
            "client refused: peer may not send a PROXY header (not in ACCEPT-PROXY FROM)"
        )
        assert line["client"].startswith("127.0.0.1:")
        balancer = await connect_from("127.0.0.2", port)
        await balancer.send(forged)
        await handshake_to_open(balancer)
        (session,) = server.sessions.values()
        assert session.client_address == ("10.66.66.66", 1)
        assert server.refusals.total == 1


def test_peer_refusal_checks_from_on_an_accept_proxy_port_and_allow_otherwise() -> None:
    proxied = ListenOptions(proxy_from=("10.0.1.5/32",), allow=("192.0.2.0/24",))
    assert proxied.accept_proxy and proxied.checks_peer
    assert proxied.peer_refusal("10.0.1.5") is None
    assert proxied.peer_refusal("::ffff:10.0.1.5") is None
    # ALLOW is for the header's source: a client address at the socket is no balancer.
    assert proxied.peer_refusal("192.0.2.1") is not None
    plain = ListenOptions(allow=("192.0.2.0/24",))
    assert not plain.accept_proxy and plain.checks_peer
    assert plain.peer_refusal("192.0.2.1") is None
    assert plain.peer_refusal("10.0.1.5") is not None
    assert not ListenOptions().checks_peer


def test_refusal_log_is_at_most_once_per_second_per_address() -> None:
    now = [100.0]
    refusals = RefusalLog(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            refusals.refused("192.0.2.1", 1, 5672)
        refusals.refused("192.0.2.2", 1, 5672)
        now[0] += 0.999
        refusals.refused("192.0.2.1", 1, 5672)
        now[0] += 0.001
        refusals.refused("192.0.2.1", 1, 5672)
    assert refusals.total == 8
    assert [(e["client"], e["also_refused_since_last_line"]) for e in logs] == [
        ("192.0.2.1:1", 0),
        ("192.0.2.2:1", 0),
        ("192.0.2.1:1", 5),
    ]
    with structlog.testing.capture_logs() as logs:
        refusals.refused("2001:db8::77", 4242, 5672)
    assert [e["client"] for e in logs] == ["[2001:db8::77]:4242"]


def test_allows_maps_ipv4_mapped_addresses() -> None:
    options = ListenOptions(allow=("127.0.0.0/8",))
    assert options.allows("::ffff:127.0.0.1") and options.allows("127.9.9.9")
    assert not options.allows("::1") and not options.allows("not-an-address")
    assert ListenOptions().allows("anything")
