"""Session events counted for /metrics: real sessions through an in-process router.

A fake broker (tests/session/wire.py) plays each ending on demand (its Close, its TCP
drop, a refusal of the vhost); the figures are read from ``SessionMetrics`` and from the
/metrics page, parsed by prometheus_client's own parser.
"""

from __future__ import annotations

import errno
import ssl

import trio
from pamqp import commands
from prometheus_client.parser import text_string_to_metric_families

from amqprouter.app import start_stats
from amqprouter.net.tls_transport import TlsHandshakeError
from amqprouter.observe.process import process_figures
from amqprouter.observe.prometheus import metrics_text, vhost_labeller
from amqprouter.observe.session_metrics import (
    CLOSE_REASONS,
    LATENCY_BUCKETS,
    Histogram,
    SessionMetrics,
)
from amqprouter.observe.stats import OTHER_VHOST, StatsCollector, Totals
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from amqprouter.session import metrics_hooks as hooks
from amqprouter.session.metrics_hooks import failure_reason
from tests.brokers import free_port
from tests.observe.test_collector import close_cleanly
from tests.session.wire import (
    WAIT,
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    fake_broker,
    open_client,
    router,
    wait_no_sessions,
)


def observe(server: Server) -> SessionMetrics:
    metrics = SessionMetrics()
    server.events = metrics
    server.session_ended.append(metrics.session_ended)
    return metrics


async def answer_close(peer: Peer, broker: FakeBroker) -> None:
    """A broker behaviour: handshake, then answer the client's Close (or one of ours)."""
    await broker_handshake(peer, broker)
    method = await peer.read_method(timeout=60)
    if isinstance(method, commands.Connection.Close):
        await peer.send_method(commands.Connection.CloseOk())
    await peer.aclose()


async def close_then_answer(peer: Peer, broker: FakeBroker) -> None:
    """A broker behaviour: handshake, then the broker closes the connection itself."""
    await broker_handshake(peer, broker)
    await peer.send_method(
        commands.Connection.Close(reply_code=320, reply_text="bye", class_id=0, method_id=0)
    )
    assert isinstance(await peer.read_method(), commands.Connection.CloseOk)
    await peer.aclose()


async def refuse_vhost(peer: Peer, broker: FakeBroker) -> None:
    """A broker behaviour: refuse every vhost at Open (RabbitMQ's 530 for an unknown one)."""
    await peer.read_protocol_header()
    await peer.send_method(
        commands.Connection.Start(server_properties={"product": "fake"}, mechanisms="PLAIN")
    )
    await peer.read_method()
    await peer.send_method(commands.Connection.Tune(channel_max=0, frame_max=131072, heartbeat=0))
    await peer.read_method()
    await peer.read_method()  # Open
    await peer.send_method(
        commands.Connection.Close(
            reply_code=530, reply_text="NOT_ALLOWED - no vhost", class_id=10, method_id=40
        )
    )
    await peer.read_method()


async def test_opened_and_closed_by_who_ended_them() -> None:
    async with (
        fake_broker(answer_close) as broker,
        router(broker.port) as (server, port),
    ):
        metrics = observe(server)
        await close_cleanly(await open_client(port))  # the client's Close
        gone = await open_client(port)
        await gone.aclose()  # the client's TCP drop: also the client's doing
        await wait_no_sessions(server)
        kicked = await open_client(port)
        assert server.disconnect_backend("fake", graceful=True, reason="test") == 1
        close = await kicked.read_method()
        assert isinstance(close, commands.Connection.Close) and close.reply_code == 320
        await kicked.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
        assert metrics.opened == 3
        assert metrics.closed == {
            "client": 2,
            "broker": 0,
            "operator": 1,
            "error": 0,
            "shutdown": 0,
        }
        # A drain for SIGTERM: the same disconnect, counted as shutdown.
        metrics.shutting_down = True
        leaving = await open_client(port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.drain, WAIT)
            assert isinstance(await leaving.read_method(), commands.Connection.Close)
            await leaving.send_method(commands.Connection.CloseOk())
        assert metrics.closed["shutdown"] == 1
        assert metrics.handshake.count == 4
        assert metrics.connect["fake"].count == 4
        assert 0 < metrics.connect["fake"].sum < 4 * WAIT
        assert metrics.routed == {"/"}


async def test_broker_endings() -> None:
    async with fake_broker(close_then_answer) as broker, router(broker.port) as (server, port):
        metrics = observe(server)
        client = await open_client(port)
        close = await client.read_method()
        assert isinstance(close, commands.Connection.Close)
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
    assert metrics.closed["broker"] == 1 and metrics.opened == 1


async def test_refused_and_unmapped_vhosts_are_not_routed_and_not_opened() -> None:
    async with fake_broker(refuse_vhost) as broker, router(broker.port) as (server, port):
        metrics = observe(server)
        client = await client_handshake(port, "made-up-by-a-client")
        close = await client.read_method()
        assert isinstance(close, commands.Connection.Close) and close.reply_code == 530
        await client.aclose()
        await wait_no_sessions(server)
        assert metrics.opened == 0 and sum(metrics.closed.values()) == 0
        assert metrics.routed == set()
        assert metrics.handshake.count == 1, "the client's handshake itself completed"
        assert metrics.connect == {}, "no broker accepted it: no connect latency"
    async with router(None) as (server, port):  # nothing mapped
        metrics = observe(server)
        client = await client_handshake(port, "unmapped")
        assert isinstance(await client.read_method(), commands.Connection.Close)
        await wait_no_sessions(server)
        assert metrics.routed == set() and metrics.opened == 0


async def closed_at_open(port: int) -> commands.Connection.Close:
    """A client whose Open the router answers with Close (no broker reachable)."""
    client = await client_handshake(port)
    close = await client.read_method()
    assert isinstance(close, commands.Connection.Close)
    await client.aclose()
    return close


async def test_failed_connects_are_counted_per_backend_and_reason() -> None:
    closed_port = free_port()  # nothing listens there: refused at once
    backend = Backend("gone", "dc", "127.0.0.1", closed_port)
    async with router(None, routing=RoutingTable.single(backend)) as (server, port):
        metrics = observe(server)
        for _ in range(2):
            assert (await closed_at_open(port)).reply_code == 320
        await wait_no_sessions(server)
    assert metrics.connect_failures == {("gone", "refused"): 2}
    assert metrics.opened == 0


async def test_a_failed_tls_handshake_to_a_backend_is_a_tls_failure() -> None:
    async def hang_up(peer: Peer, broker: FakeBroker) -> None:
        await peer.aclose()  # a plain server that drops the ClientHello

    async with fake_broker(hang_up) as broker:
        backend = Backend("secure", "dc", "127.0.0.1", broker.port, tls=True)
        async with router(None, routing=RoutingTable.single(backend)) as (server, port):
            metrics = observe(server)
            await closed_at_open(port)
            await wait_no_sessions(server)
    assert metrics.connect_failures == {("secure", "tls"): 1}


async def test_a_name_that_does_not_resolve_is_a_dns_failure() -> None:
    backend = Backend("nameless", "dc", "no-such-host.invalid", 5672)
    async with router(None, routing=RoutingTable.single(backend)) as (server, port):
        metrics = observe(server)
        await closed_at_open(port)
        await wait_no_sessions(server)
    assert metrics.connect_failures == {("nameless", "dns"): 1}


def test_failure_reasons() -> None:
    assert failure_reason(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == hooks.REFUSED
    assert failure_reason(OSError(errno.ETIMEDOUT, "timed out")) == hooks.TIMEOUT
    assert failure_reason(ssl.SSLError("bad")) == hooks.TLS
    wrapped = OSError("TLS handshake failed: certificate verify failed")
    wrapped.__cause__ = TlsHandshakeError("certificate verify failed")
    assert failure_reason(wrapped) == hooks.TLS
    assert failure_reason(OSError("TLS EGRESS is not usable yet: it needs a CA")) == hooks.TLS
    assert failure_reason(OSError(errno.ENETUNREACH, "unreachable")) == hooks.OTHER
    metrics = SessionMetrics()
    metrics.connect_failed(Backend("b", "dc", "h", 1), "made-up")
    assert metrics.connect_failures == {("b", "other"): 1}, "the label set stays fixed"


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert (histogram.count, histogram.sum) == (4, 3.65)
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_the_page_parses_and_no_vhost_label_is_a_clients_invention() -> None:
    """The families as prometheus_client reads them; every vhost-labelled series checked."""
    collector = StatsCollector({}, 1.0)
    for vhost in ("/", "mapped", "made-up-1", "made-up-2", ""):
        collector.totals[(vhost, "b")] = Totals(bytes_received=10, limited=1)
    metrics = SessionMetrics()
    metrics.routed.add("/")
    metrics.handshake.observe(0.003)
    metrics.connect["b"] = Histogram()
    metrics.connect["b"].observe(0.02)
    metrics.connect_failed(Backend("b", "dc", "h", 1), hooks.TIMEOUT)
    text = metrics_text(
        collector,
        listeners=1,
        events=metrics,
        vhost_label=vhost_labeller(metrics.routed, {"mapped": ("farm", "f")}),
    )
    families = {family.name: family for family in text_string_to_metric_families(text)}
    vhosts = {
        sample.labels["vhost"]
        for family in families.values()
        for sample in family.samples
        if "vhost" in sample.labels
    }
    assert vhosts == {"/", "mapped", "", OTHER_VHOST}
    bytes_in = {
        sample.labels["vhost"]: sample.value
        for sample in families["amqprouter_bytes"].samples
        if sample.labels["direction"] == "client_to_broker"
    }
    assert bytes_in[OTHER_VHOST] == 20, "the two made-up vhosts summed in one bucket"
    assert families["amqprouter_handshake_seconds"].type == "histogram"
    buckets = [
        s for s in families["amqprouter_connect_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert {s.labels["backend"] for s in buckets} == {"b"}
    assert families["amqprouter_sessions_closed"].type == "counter"
    assert {s.labels["reason"] for s in families["amqprouter_sessions_closed"].samples} == set(
        CLOSE_REASONS
    )
    failures = families["amqprouter_backend_connect_failures"].samples
    assert [(s.labels, s.value) for s in failures] == [({"backend": "b", "reason": "timeout"}, 1)]
    for name in (
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds",
    ):
        assert name in families, name


async def test_start_stats_installs_the_observer() -> None:
    server = Server(SessionSettings())
    async with trio.open_nursery() as nursery:
        service = await start_stats(nursery, server, interval=1.0)
        assert server.events is service.events
        assert service.events.session_ended in server.session_ended
        nursery.cancel_scope.cancel()


def test_process_figures_agree_with_prometheus_client() -> None:
    """Our /proc reading and prometheus_client's ProcessCollector, side by side."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    theirs = {
        sample.name: sample.value for metric in registry.collect() for sample in metric.samples
    }
    ours = process_figures()
    assert ours.start_time_seconds == theirs["process_start_time_seconds"]
    assert ours.max_fds == theirs["process_max_fds"]
    assert abs((ours.open_fds or 0) - theirs["process_open_fds"]) <= 2
    assert abs((ours.virtual_memory_bytes or 0) - theirs["process_virtual_memory_bytes"]) < 2**24
    assert abs((ours.resident_memory_bytes or 0) - theirs["process_resident_memory_bytes"]) < 2**24
    assert abs(ours.cpu_seconds_total - theirs["process_cpu_seconds_total"]) < 1.0
