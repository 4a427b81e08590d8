"""Backend health with real brokers: a farm of two private RabbitMQ nodes, node 1 killed.

The router runs as users run it and is driven by ``amqprouter_ctl``; where a
connection landed is proved from the broker side (``rabbitmqctl list_connections``).
The two nodes are independent brokers, not a cluster: a queue and its messages live
on the node they were declared on, so confirmed but unconsumed messages on node 1 can
only be reached again once node 1 is back.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import aio_pika
import attrs
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic

from tests.brokers import NodeTls, RabbitNode, RabbitNodeFactory, port_is_open, wait_for
from tests.integration.test_control_plane import (
    WAIT,
    ControlledRouter,
    client,
    log_lines,
    running_router,
)
from tests.tls_certs import TlsFiles

#: BACKEND CHECK settings of these tests: a probe every 300 ms, down after 3 failures.
INTERVAL_MS, FALL, RISE = 300, 3, 2
#: What the log timestamps of a marked-down may lag fall*interval by: trio scheduling,
#: one probe's own refused connect and a busy 2-core machine. Not a tuning knob.
SCHEDULING_SLACK = 0.5
#: Clients must be back, through the router, on the other node within this.
RECONNECT_WITHIN = 2.0


@pytest.fixture(scope="module")
def pair(session_rabbit_node_factory: RabbitNodeFactory) -> Iterator[tuple[RabbitNode, ...]]:
    """Two private nodes booted side by side (vhost / only); node 1 gets killed."""
    factory = session_rabbit_node_factory
    nodes = (factory.create(start=False), factory.create(start=False))
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: node.start(), nodes))
        yield nodes
    finally:
        for node in nodes:
            node.destroy()
            factory.nodes.remove(node)


@pytest.fixture
def farm_router(pair: tuple[RabbitNode, ...]) -> Iterator[ControlledRouter]:
    """A router with backends n1, n2 (the two nodes) and a listener; no farm yet."""
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-hl-"))
    try:
        with running_router(workdir / "control") as router:
            router.must("BACKEND ADD n1 dc1 127.0.0.1", pair[0].port)
            router.must("BACKEND ADD n2 dc1 127.0.0.1", pair[1].port)
            router.listen()
            yield router
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def backend_state(router: ControlledRouter, name: str) -> str:
    """The health part of ``name``'s BACKEND PRINT line ("" when there is none)."""
    for line in router.must("BACKEND PRINT").splitlines():
        if line.startswith(f"{name} "):
            return re.sub(r"^.*?:\d+", "", line, count=1).strip()
    raise AssertionError(f"{name} missing from BACKEND PRINT")


def nodes_of(nodes: Sequence[RabbitNode], names: Iterable[str]) -> dict[str, int]:
    """Which node (index in ``nodes``) lists each named connection, per the brokers.

    Like test_control_plane's ``landings``, but a health probe's connection (still in
    its handshake, with no client properties yet) is passed over.
    """
    wanted = set(names)
    found: dict[str, int] = {}

    def look() -> bool:
        found.clear()
        for index, node in enumerate(nodes):
            for connection in node.list_connections():
                properties = connection.get("client_properties")
                if isinstance(properties, dict) and properties.get("connection_name") in wanted:
                    found[properties["connection_name"]] = index
        return set(found) == wanted

    wait_for(look, WAIT, f"connections {sorted(wanted)} to be listed by the brokers")
    return dict(found)


def log_time(line: str) -> float:
    """The POSIX time of a router log line (``timestamp='...Z'``)."""
    match = re.search(r"timestamp='([^']+)'", line)
    assert match, line
    return datetime.datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


def test_active_check_marks_a_killed_node_down_and_new_connections_skip_it(
    farm_router: ControlledRouter, pair: tuple[RabbitNode, ...]
) -> None:
    router = farm_router
    router.must("FARM ADD f round-robin n1 n2")
    router.must("MAP DEFAULT f")
    router.must("BACKEND CHECK n1 ON", INTERVAL_MS, FALL, RISE)
    router.must("BACKEND CHECK n2 ON", INTERVAL_MS, FALL, RISE)
    assert backend_state(router, "n1") == "UP"
    assert "BACKEND CHECK n1 ON 300 3 2 300\n" in router.must("CONFIG PRINT")

    killed_at = time.time()
    pair[0].kill()
    wait_for(lambda: backend_state(router, "n1").startswith("DOWN"), WAIT, "n1 DOWN")
    state = re.fullmatch(
        rf"DOWN \(connect refused 127\.0\.0\.1:{pair[0].port}, (\d+) checks\)",
        backend_state(router, "n1"),
    )
    assert state is not None and int(state.group(1)) >= FALL, backend_state(router, "n1")
    assert backend_state(router, "n2") == "UP"
    [down_line] = log_lines(router, "event='backend down'", "backend='n1'")
    assert "level='warning'" in down_line and "connect refused" in down_line
    took = log_time(down_line) - killed_at
    assert took <= FALL * INTERVAL_MS / 1000 + SCHEDULING_SLACK, took

    # Round-robin would give n1 one of these two; both go to n2 without trying n1.
    names = ["after-kill-1", "after-kill-2"]
    with client(router.port, "/", names[0]), client(router.port, "/", names[1]):
        nodes_of(pair[1:], names)  # both listed by node 2 (node 1 cannot be asked)
    assert log_lines(router, "broker connect failed", expect=False) == []

    pair[0].restart()
    wait_for(lambda: backend_state(router, "n1") == "UP", WAIT, "n1 UP again")
    [up_line] = log_lines(router, "event='backend up'", "backend='n1'")
    assert f"reason='{RISE} checks passed'" in up_line
    names = ["back-1", "back-2"]
    with client(router.port, "/", names[0]), client(router.port, "/", names[1]):
        assert set(nodes_of(pair, names).values()) == {0, 1}


# --------------------------------------------------------------------------- #
# node-kill failover with real clients
# --------------------------------------------------------------------------- #


@attrs.define
class Traffic:
    """What one client did: confirmed and consumed message bodies, (re)connect times."""

    name: str
    confirmed: list[str] = attrs.Factory(list)
    consumed: set[str] = attrs.Factory(set)
    connected: list[float] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)

    def connected_after(self, moment: float) -> float | None:
        later = [when for when in self.connected if when > moment]
        return later[0] if later else None


def run_pika(port: int, traffic: Traffic, stop: threading.Event) -> None:
    """pika with a reconnect loop: publish with confirms, consume one message in three.

    The slow consumer (prefetch 1, one delivery handled per three publishes) keeps a
    backlog in the queue, so that node 1 still holds confirmed messages when killed.
    """
    queue, number = traffic.name, 0
    while not stop.is_set():
        try:
            connection = client(port, "/", traffic.name)
            traffic.connected.append(time.monotonic())
            publisher = connection.channel()
            publisher.confirm_delivery()
            publisher.queue_declare(queue, durable=True)
            consumer = connection.channel()
            consumer.basic_qos(prefetch_count=1)

            def on_message(
                channel: BlockingChannel, method: Basic.Deliver, _props: object, body: bytes
            ) -> None:
                traffic.consumed.add(body.decode())
                channel.basic_ack(method.delivery_tag)

            consumer.basic_consume(queue, on_message)
            while not stop.is_set():
                number += 1
                body = f"{traffic.name}-{number}"
                publisher.basic_publish(
                    "", queue, body.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True
                )
                traffic.confirmed.append(body)
                if number % 3 == 0:
                    connection.process_data_events(time_limit=0)
            connection.close()
        except pika.exceptions.AMQPError as exc:
            traffic.errors.append(repr(exc))
            time.sleep(0.05)


def run_aio_pika(port: int, traffic: Traffic, stop: threading.Event) -> None:
    """aio-pika ``connect_robust``: it reconnects and restores queue and consumer itself."""

    async def main() -> None:
        connection = await aio_pika.connect_robust(
            f"amqp://guest:guest@127.0.0.1:{port}/",
            reconnect_interval=0.1,
            client_properties={"connection_name": traffic.name},
        )
        traffic.connected.append(time.monotonic())
        connection.reconnect_callbacks.add(
            lambda *_args: traffic.connected.append(time.monotonic())
        )
        async with connection:
            # A publish that reaches node 2 before aio-pika has declared the queue there
            # again is returned unroutable, yet acked: it must raise, not count as kept.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=1)
            queue = await channel.declare_queue(traffic.name, durable=True)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                await asyncio.sleep(0.005)  # slower than the publisher: a backlog builds
                traffic.consumed.add(message.body.decode())
                await message.ack()

            await queue.consume(on_message)
            number = 0
            while not stop.is_set():
                number += 1
                body = f"{traffic.name}-{number}"
                message = aio_pika.Message(
                    body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                try:
                    await channel.default_exchange.publish(message, traffic.name, timeout=WAIT)
                except Exception as exc:  # broker gone, reconnecting: this one is unconfirmed
                    traffic.errors.append(repr(exc))
                    await asyncio.sleep(0.05)
                    continue
                traffic.confirmed.append(body)

    asyncio.run(main())


def drain(node: RabbitNode, queue: str) -> list[str]:
    """Every message left in ``queue`` on ``node`` (taken straight from the node)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.port))
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404, exc
            return []
        left: list[str] = []
        while True:
            _method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if body is None:
                return left
            left.append(body.decode())
    finally:
        connection.close()


def test_clients_fail_over_to_node_2_and_no_confirmed_message_is_lost(
    farm_router: ControlledRouter, pair: tuple[RabbitNode, ...]
) -> None:
    router = farm_router
    # Both clients start on node 1 (the farm has only it), then node 2 joins the farm.
    router.must("FARM ADD f round-robin n1")
    router.must("MAP DEFAULT f")
    stop = threading.Event()
    clients: list[tuple[Traffic, Callable[[int, Traffic, threading.Event], None]]] = [
        (Traffic("failover-pika"), run_pika),
        (Traffic("failover-aio-pika"), run_aio_pika),
    ]
    threads = [
        threading.Thread(target=run, args=(router.port, traffic, stop), daemon=True)
        for traffic, run in clients
    ]
    everyone = [traffic for traffic, _ in clients]
    try:
        for thread in threads:
            thread.start()
        wait_for(
            lambda: all(len(t.confirmed) >= 50 and t.consumed for t in everyone),
            WAIT,
            "both clients publishing and consuming",
        )
        names = [traffic.name for traffic in everyone]
        assert set(nodes_of(pair, names).values()) == {0}
        router.must("FARM ADD f round-robin n1 n2")

        before = {t.name: len(t.confirmed) for t in everyone}
        killed_at = time.monotonic()
        pair[0].kill()
        wait_for(
            lambda: all(len(t.confirmed) >= before[t.name] + 50 for t in everyone),
            WAIT,
            "both clients to carry on after the kill",
        )
        for traffic in everyone:
            back = traffic.connected_after(killed_at)
            assert back is not None, traffic
            assert back - killed_at < RECONNECT_WITHIN, (traffic.name, back - killed_at)
        nodes_of(pair[1:], names)  # both listed by node 2 (node 1 cannot be asked)
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)

    pair[0].restart()
    for traffic, run in clients:
        left_on_1 = drain(pair[0], traffic.name)
        left_on_2 = drain(pair[1], traffic.name)
        lost = set(traffic.confirmed) - traffic.consumed - set(left_on_1) - set(left_on_2)
        assert not lost, (traffic.name, len(lost), sorted(lost)[:5], traffic.errors[:3])
        if run is run_pika:
            # Its consumer is slower by construction, so node 1 held a backlog when it
            # was killed: only node 1's restart gave those confirmed messages back.
            assert left_on_1, traffic


@pytest.fixture(scope="module")
def wrapped_nodes(
    session_rabbit_node_factory: RabbitNodeFactory, tls_files: TlsFiles
) -> Iterator[tuple[RabbitNode, RabbitNode]]:
    """A node serving TLS (and plain AMQP), and a ``proxy_protocol = true`` node serving
    TLS too (a PROXY header first on both its ports); the test stops both."""
    factory = session_rabbit_node_factory
    tls_node, proxy_node = factory.create(start=False), factory.create(start=False)
    for node in (tls_node, proxy_node):
        node.tls = NodeTls(tls_files.ca, tls_files.server.chain, tls_files.server.key)
    proxy_node.extra_config = "proxy_protocol = true\n"
    nodes = (tls_node, proxy_node)
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: node.start(), nodes))
        for node in nodes:
            assert node.tls is not None
            wait_for(
                partial(port_is_open, node.tls.port, node.host), WAIT, f"{node.name}'s TLS port"
            )
        yield nodes
    finally:
        for node in nodes:
            node.destroy()
            factory.nodes.remove(node)


def test_backend_check_reaches_tls_and_proxy_protocol_brokers_as_sessions_do(
    wrapped_nodes: tuple[RabbitNode, RabbitNode], tls_files: TlsFiles
) -> None:
    """The probe connects through the sessions' wrap: TLS (SNI, the certificate checked)
    and, for SEND-PROXY[-V2], a PROXY header naming the router's own end as its source.
    Healthy TLS and proxy_protocol brokers stay up; stopped, they go down."""
    tls_node, proxy_node = wrapped_nodes
    assert tls_node.tls is not None and proxy_node.tls is not None
    healthy = {
        "tls": f"{tls_node.tls.port} TLS",
        "proxy1": f"{proxy_node.port} SEND-PROXY",
        "proxy2": f"{proxy_node.port} SEND-PROXY-V2",
        "proxy1-tls": f"{proxy_node.tls.port} SEND-PROXY TLS",
        "proxy2-tls": f"{proxy_node.tls.port} SEND-PROXY-V2 TLS",
    }
    # The same listeners probed without the wrap they need (what every probe used to
    # send): refused, so these go down; it shows the checks ran while the others held.
    unwrapped = {"tls-as-plain": f"{tls_node.tls.port}", "proxy-as-plain": f"{proxy_node.port}"}
    # A generous timeout: a TLS handshake on a busy 2-core machine is not what is tested.
    interval_ms, timeout_ms = 500, 1500
    check = (interval_ms, FALL, RISE, timeout_ms)
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-hw-"))
    try:
        with running_router(workdir / "control") as router:
            router.must("TLS EGRESS CA_CERT_FILE", str(tls_files.ca))
            router.must("TLS EGRESS VERIFY_MODE PEER")
            for name, where in {**healthy, **unwrapped}.items():
                router.must(f"BACKEND ADD {name} dc1 127.0.0.1 {where}")
                router.must(f"BACKEND CHECK {name} ON", *check)

            def health(name: str) -> str:
                """UP or DOWN (...), after the backend's flags (TLS, PROXY ...)."""
                state = backend_state(router, name)
                found = re.search(r"(?:^| )(UP|DOWN \(.*\))$", state)
                return found.group(1) if found else state

            def down(name: str) -> Callable[[], bool]:
                return lambda: health(name).startswith("DOWN (")

            for name in unwrapped:
                wait_for(down(name), WAIT, f"{name} DOWN")
            # Long enough for FALL probes that fail, even by timing out, to mark one down.
            time.sleep(FALL * (interval_ms + timeout_ms) / 1000)
            states = {name: health(name) for name in healthy}
            assert states == dict.fromkeys(healthy, "UP"), states
            for name in healthy:
                assert log_lines(router, "backend down", f"backend='{name}'", expect=False) == []

            tls_node.stop()
            proxy_node.stop()
            for name in healthy:
                wait_for(down(name), WAIT, f"{name} DOWN once its broker stopped")
                assert health(name).startswith("DOWN (connect refused 127.0.0.1:"), health(name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
