"""Pooling mode with real clients (pika, aio-pika) against real RabbitMQ.

Each test starts a router with ``--pool`` in front of the machine's broker (a fresh
vhost per test) or a private node it may kill, and checks what a pooled client and the
broker see: messages arrive exactly once, the broker sees one connection where the
clients opened many, a consumer works, a channel error stays with its client, a wrong
password gets the broker's 403, a dead broker gives every pooled client a 320 at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import commands
from pamqp import frame as pamqp_frame

from amqprouter.protocol import Frame, FrameReader, constants, methods
from tests.brokers import GUEST, RabbitNode, SystemBroker, free_port, wait_for
from tests.integration.test_control_plane import (
    ControlledRouter,
    workdir,  # noqa: F401 - fixture
)
from tests.integration.test_control_plane import running_router as controlled_router
from tests.integration.test_statistics import Stream, metrics
from tests.router import RouterProcess, running_router

QUEUE = "pooled"


def params(router: RouterProcess, vhost: str, password: str = GUEST) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        router.port,
        vhost,
        pika.PlainCredentials(GUEST, password),
        connection_attempts=1,
    )


def php_request(router: RouterProcess, vhost: str, body: bytes) -> None:
    """What a PHP request does: connect, open a channel, publish one message with
    confirm, disconnect."""
    connection = pika.BlockingConnection(params(router, vhost))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", QUEUE, body)  # raises unless the broker confirms it
    connection.close()


def drain(router: RouterProcess, vhost: str) -> list[bytes]:
    connection = pika.BlockingConnection(params(router, vhost))
    channel = connection.channel()
    bodies = []
    while True:
        _method, _properties, body = channel.basic_get(QUEUE, auto_ack=True)
        if body is None:
            break
        bodies.append(body)
    connection.close()
    return bodies


def declare(router: RouterProcess, vhost: str) -> None:
    connection = pika.BlockingConnection(params(router, vhost))
    connection.channel().queue_declare(QUEUE)
    connection.close()


def broker_connections(broker: SystemBroker | RabbitNode, vhost: str) -> int:
    return sum(1 for c in broker.list_connections() if c.get("vhost") == vhost)


@pytest.fixture
def pool_router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(5672, extra=["--pool", "--pool-idle-timeout", "3"]) as router:
        yield router


def test_php_style_loop_every_message_once_over_one_broker_connection(
    pool_router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    declare(pool_router, system_vhost)
    sequential = [f"seq-{i}".encode() for i in range(30)]
    for body in sequential:
        php_request(pool_router, system_vhost, body)
    parallel = [f"par-{t}-{i}".encode() for t in range(4) for i in range(10)]
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for i in range(10):
                php_request(pool_router, system_vhost, f"par-{thread}-{i}".encode())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    # The broker sees one connection of the vhost (the pooled one, kept while idle),
    # where the clients opened 71 (70 PHP requests and the declare).
    assert broker_connections(system_broker, system_vhost) == 1
    got = drain(pool_router, system_vhost)
    assert sorted(got) == sorted(sequential + parallel)
    assert len(set(got)) == len(got) == 70
    # Idle for longer than --pool-idle-timeout: the pooled connection is closed.
    wait_for(
        lambda: broker_connections(system_broker, system_vhost) == 0,
        15,
        "the idle pooled connection to close",
    )


def test_aio_pika_through_the_pool(pool_router: RouterProcess, system_vhost: str) -> None:
    url = (
        f"amqp://guest:guest@127.0.0.1:{pool_router.port}/"
        f"{urllib.parse.quote(system_vhost, safe='')}"
    )

    async def main() -> list[bytes]:
        for i in range(5):
            connection = await aio_pika.connect(url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue(QUEUE)
                await channel.default_exchange.publish(
                    aio_pika.Message(f"aio-{i}".encode()), routing_key=QUEUE
                )
        received = []
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(QUEUE)
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        received.append(message.body)
                    if len(received) == 5:
                        break
        return received

    assert sorted(asyncio.run(asyncio.wait_for(main(), 30))) == [
        f"aio-{i}".encode() for i in range(5)
    ]


def test_a_consumer_works_and_its_unacked_messages_are_requeued(
    pool_router: RouterProcess, system_vhost: str
) -> None:
    declare(pool_router, system_vhost)
    for i in range(4):
        php_request(pool_router, system_vhost, f"m{i}".encode())
    consumer = pika.BlockingConnection(params(pool_router, system_vhost))
    channel = consumer.channel()
    channel.basic_qos(prefetch_count=10)
    seen: list[tuple[int, bytes]] = []
    for method, _properties, body in channel.consume(QUEUE, inactivity_timeout=5):
        assert method is not None, "no delivery within 5 s"
        seen.append((method.delivery_tag, body))
        if len(seen) == 4:
            break
    # Delivery tags are the client's own, from 1.
    assert [tag for tag, _ in seen] == [1, 2, 3, 4]
    channel.basic_ack(seen[0][0])
    channel.basic_ack(seen[1][0])
    consumer.close()  # two acked, two not: the broker channel is closed, they requeue
    left = drain(pool_router, system_vhost)
    assert sorted(left) == sorted(body for _tag, body in seen[2:])


def test_a_channel_error_stays_with_its_client(
    pool_router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    declare(pool_router, system_vhost)
    a = pika.BlockingConnection(params(pool_router, system_vhost))
    b = pika.BlockingConnection(params(pool_router, system_vhost))
    a_channel, b_channel = a.channel(), b.channel()
    b_channel.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        a_channel.queue_declare("no-such-queue", passive=True)
    assert caught.value.reply_code == 404
    # B goes on unharmed on the same broker connection, and A on a new channel.
    b_channel.basic_publish("", QUEUE, b"from b")
    a.channel().basic_publish("", QUEUE, b"from a")
    assert a.is_open and b.is_open
    assert broker_connections(system_broker, system_vhost) == 1
    a.close()
    b.close()
    assert sorted(drain(pool_router, system_vhost)) == [b"from a", b"from b"]


def test_a_wrong_password_gets_the_brokers_403(
    pool_router: RouterProcess, system_vhost: str
) -> None:
    declare(pool_router, system_vhost)  # a pooled connection with the right password
    good = pika.BlockingConnection(params(pool_router, system_vhost))
    # The router's own handshake with the client is past Tune when the broker refuses,
    # so pika names it an access (not authentication) error; the words are the broker's.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as caught:
        pika.BlockingConnection(params(pool_router, system_vhost, password="wrong"))
    assert "(403) 'ACCESS_REFUSED - Login was refused" in str(caught.value)
    assert good.is_open
    good.close()


def test_a_broker_killed_gives_every_pooled_client_a_320_within_a_second(
    rabbit_node: RabbitNode,
) -> None:
    with running_router(rabbit_node.port, extra=["--pool"]) as router:
        clients = []
        for _ in range(5):
            connection = pika.BlockingConnection(params(router, "/"))
            connection.channel().queue_declare("", exclusive=True)
            clients.append(connection)
        assert broker_connections(rabbit_node, "/") == 1
        rabbit_node.kill()
        killed = time.monotonic()
        for connection in clients:
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
                while time.monotonic() - killed < 5:
                    connection.process_data_events(time_limit=0.05)
            elapsed = time.monotonic() - killed
            assert elapsed < 1.0, f"a pooled client learnt of the dead broker after {elapsed:.2f}s"
            assert caught.value.reply_code == 320
            assert "closed the connection" in caught.value.reply_text


def stat_once(router: ControlledRouter) -> str:
    """One STAT LISTEN human all chunk (up to the line after BufferPool's, the rest)."""
    stream = Stream(router, "human", "all-except-per-source")
    try:
        lines = [stream.next().decode()]
        while lines[-1].strip() != "" or len(lines) < 2:
            lines.append(stream.next().decode())
    finally:
        stream.close()
    return "".join(lines)


def test_map_pool_at_runtime_and_the_pool_in_conn_stat_and_metrics(
    workdir: Path,  # noqa: F811
    system_broker: SystemBroker,
    system_vhost: str,
) -> None:
    http_port = free_port()
    args = ("--cleanup-interval-ms", "100", "--http-port", str(http_port))
    with controlled_router(workdir / "control", *args) as router:
        router.must("BACKEND ADD sys dc1 127.0.0.1", system_broker.port)
        router.must("MAP BACKEND", system_vhost, "sys")
        port = router.listen()
        plain = RouterProcess(port, router.process, router.stdout_path, router.stderr_path)
        # Not pooled yet: STAT has no Pool section.
        assert "\nPool:\n" not in stat_once(router)
        router.must("MAP POOL", system_vhost, "ON")
        assert f'"{system_vhost}" pool ON' in router.must("MAP PRINT")
        assert f"MAP POOL {system_vhost} ON" in router.must("CONFIG PRINT")
        declare(plain, system_vhost)
        held = [pika.BlockingConnection(params(plain, system_vhost)) for _ in range(3)]
        for connection in held:
            connection.channel().basic_publish("", QUEUE, b"held")
        conn = router.must("CONN")
        assert conn.count("poolLink=1 ") == 3, conn
        # A pooled session has no broker side of its own to hold: pausing it is refused.
        session_id = conn.split("id=", 1)[1].split(" ", 1)[0]
        refused = router.ctl("SESSION", session_id, "PAUSE")
        assert (refused.code, refused.out) == (
            1,
            f"Session {session_id} is pooled: a pooled session cannot be paused.\n",
        )
        # Nor traced or captured: its frames go through the pool, which no trace watches.
        for verb, *words in (("TRACE",), ("CAPTURE", str(workdir / "pooled.pcap"))):
            refused = router.ctl("SESSION", verb, session_id, *words)
            assert refused.code == 1 and f"Session {session_id} is pooled" in refused.out, refused
        assert not (workdir / "pooled.pcap").exists()
        stat = stat_once(router)
        assert "\nPool:\nBroker connections: 1 Clients: 3 Channels: 3 " in stat, stat
        for connection in held:
            connection.close()
        figures = metrics(http_port)
        assert figures[("amqprouter_pool_connections", frozenset())] == 1
        assert figures[("amqprouter_pool_connections_opened_total", frozenset())] == 1
        assert figures[("amqprouter_pool_clients_total", frozenset())] == 4
        # The declaring and publishing channels were safe: kept open and handed on (the
        # declare's to the first held client), and kept again.
        assert figures[("amqprouter_pool_channels", frozenset({("state", "idle")}))] == 3
        assert figures[("amqprouter_pool_channels_reused_total", frozenset())] == 1
        php_request(plain, system_vhost, b"reused")
        assert metrics(http_port)[("amqprouter_pool_channels_reused_total", frozenset())] == 2
        # A data-rate limit is honoured by giving its clients their own broker connection.
        router.must("LIMIT DATA_RATE VHOST", system_vhost, 1_000_000)
        limited = pika.BlockingConnection(params(plain, system_vhost))
        conn = router.must("CONN")
        assert "id=" in conn and "poolLink" not in conn, conn
        limited.close()
        router.must("LIMIT DISABLE DATA_RATE VHOST", system_vhost)
        # OFF: the vhost's next client is not pooled (no poolLink on its CONN line).
        router.must("MAP POOL", system_vhost, "OFF")
        own = pika.BlockingConnection(params(plain, system_vhost))
        assert "poolLink" not in router.must("CONN")
        own.close()
        assert sorted(drain(plain, system_vhost)) == [b"held"] * 3 + [b"reused"]


def test_the_brokers_connection_close_reaches_every_pooled_client_with_its_words(
    rabbit_node: RabbitNode,
) -> None:
    with running_router(rabbit_node.port, extra=["--pool"]) as router:
        clients = [pika.BlockingConnection(params(router, "/")) for _ in range(3)]
        for connection in clients:
            connection.channel()
        assert broker_connections(rabbit_node, "/") == 1
        rabbit_node.close_all_connections("maintenance by test")
        for connection in clients:
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    connection.process_data_events(time_limit=0.05)
            assert caught.value.reply_code == 320
            assert "maintenance by test" in caught.value.reply_text
        # The next client gets a fresh pooled connection.
        again = pika.BlockingConnection(params(router, "/"))
        again.channel().queue_declare("", exclusive=True)
        again.close()


class RawClient:
    """A client written with pamqp frames, for what a library would not send."""

    def __init__(self, port: int, heartbeat: int = 0, vhost: str = "/") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = FrameReader(131072)
        self.sock.sendall(constants.PROTOCOL_HEADER)
        assert self.next_frame().method_id == constants.CONNECTION_START
        start_ok = commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest"
        )
        self.sock.sendall(pamqp_frame.marshal(start_ok, 0))
        assert self.next_frame().method_id == constants.CONNECTION_TUNE
        tune_ok = commands.Connection.TuneOk(
            channel_max=2047, frame_max=131072, heartbeat=heartbeat
        )
        self.sock.sendall(pamqp_frame.marshal(tune_ok, 0) + methods.open_frame(vhost))
        assert self.next_frame().method_id == constants.CONNECTION_OPEN_OK

    def next_frame(self) -> Frame:
        while (got := self.reader.next_frame()) is None:
            self.reader.feed(self.sock.recv(65536))
        return got

    def close(self) -> None:
        self.sock.close()


def test_a_frame_on_a_channel_never_opened_ends_that_client_alone(
    pool_router: RouterProcess, system_broker: SystemBroker
) -> None:
    other = pika.BlockingConnection(params(pool_router, "/"))
    channel = other.channel()
    channel.confirm_delivery()
    raw = RawClient(pool_router.port)
    try:
        publish = commands.Basic.Publish(exchange="", routing_key="nowhere")
        raw.sock.sendall(pamqp_frame.marshal(publish, 5))
        closed = methods.peer_closed(raw.next_frame())
        assert closed.reply_code == 504
        assert closed.reply_text == "CHANNEL_ERROR - expected 'channel.open' on channel 5"
    finally:
        raw.close()
    # The other client of the same broker connection goes on.
    channel.basic_publish("", "nowhere", b"still here")
    assert other.is_open
    other.close()


def test_a_silent_pooled_client_is_heartbeaten_then_closed(pool_router: RouterProcess) -> None:
    """A client that agreed a 1 s heartbeat gets the router's heartbeats, and a Close 320
    once it has said nothing for two intervals."""
    client = RawClient(pool_router.port, heartbeat=1)
    try:
        next_frame = client.next_frame
        opened = time.monotonic()
        heartbeats = 0
        while (got := next_frame()).frame_type == constants.FRAME_HEARTBEAT:
            heartbeats += 1
        closed = methods.peer_closed(got)
        elapsed = time.monotonic() - opened
        assert heartbeats >= 2
        assert closed.reply_code == 320
        assert closed.reply_text == "CONNECTION_FORCED - client sent nothing for 2s"
        assert 1.9 < elapsed < 3.5
    finally:
        client.close()


def test_a_pooled_client_that_stops_reading_is_cut_and_never_holds_the_others(
    pool_router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    """A consumer that stops reading while the broker pushes it 32 MiB: the other client
    of the same broker connection gets each confirm at once (the link never waits on
    the stuck one), and the stuck one is cut once more than the router's bound waits
    for it (its socket: the write stopped inside a frame)."""
    declare(pool_router, system_vhost)
    loader = pika.BlockingConnection(params(pool_router, system_vhost))
    loading = loader.channel()
    loading.confirm_delivery()
    for _ in range(512):
        loading.basic_publish("", QUEUE, b"x" * 65536)
    other = pika.BlockingConnection(params(pool_router, system_vhost))
    channel = other.channel()
    channel.confirm_delivery()
    stuck = RawClient(pool_router.port, vhost=system_vhost)
    try:
        stuck.sock.sendall(
            pamqp_frame.marshal(commands.Channel.Open(), 1)
            + pamqp_frame.marshal(commands.Basic.Consume(queue=QUEUE, no_ack=True), 1)
        )  # and reads nothing from now on
        slowest = 0.0
        ended = time.monotonic() + 3
        while time.monotonic() < ended:
            began = time.monotonic()
            channel.basic_publish("", "nowhere", b"still here")  # waits for its confirm
            slowest = max(slowest, time.monotonic() - began)
        assert slowest < 0.5, f"a confirm took {slowest:.2f}s behind the stuck client"
        assert other.is_open and loader.is_open
        assert broker_connections(system_broker, system_vhost) == 1
        stuck.sock.settimeout(5)
        with pytest.raises((ConnectionError, EOFError)):  # cut: its stream just ends
            while True:
                data = stuck.sock.recv(1 << 20)
                if not data:
                    raise EOFError
    finally:
        stuck.close()
    other.close()
    loader.close()
