"""The collector over real sessions: an in-process router in front of the real broker.

Traffic is raw AMQP (tests/session/wire.py) so that every byte the client sends is
known; the figures are checked against the bytes written and against the sessions'
own counters. A fake broker (pamqp) is used only to make the broker snap.
"""

from __future__ import annotations

import pytest
import trio
from pamqp import body, commands, frame, header

from amqprouter.observe import stats as stats_module
from amqprouter.observe.stats import (
    NO_BACKEND,
    OTHER_VHOST,
    ConnectionStats,
    Removal,
    StatsCollector,
    StatsSnapshot,
    removal,
)
from amqprouter.server import Server
from amqprouter.session import End
from tests.brokers import SystemBroker
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

BODY = b"m" * 1000


def publish_frames(count: int, channel: int = 1) -> bytes:
    """``count`` messages of BODY to the default exchange, as raw frames."""
    one = (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="nowhere"), channel)
        + frame.marshal(header.ContentHeader(0, len(BODY), commands.Basic.Properties()), channel)
        + frame.marshal(body.ContentBody(BODY), channel)
    )
    return one * count


async def open_channel(client: Peer) -> None:
    await client.send_method(commands.Channel.Open(), 1)
    assert isinstance(await client.read_method(), commands.Channel.OpenOk)


async def close_cleanly(client: Peer) -> None:
    await client.send_method(
        commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    assert isinstance(await client.read_method(), commands.Connection.CloseOk)
    assert await client.at_eof()


def collector_for(server: Server) -> StatsCollector:
    collector = StatsCollector(server.sessions, 1.0)
    server.session_ended.append(collector.session_ended)
    return collector


def total(snapshots: list[StatsSnapshot], field: str) -> int:
    return sum(getattr(snapshot.overall, field) for snapshot in snapshots)


async def test_traffic_is_deltas_and_an_ended_session_keeps_its_last_interval(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, port):
        collector = collector_for(server)
        client = await open_client(port)
        (session,) = server.sessions.values()
        await open_channel(client)
        snapshots = [collector.collect()]
        first = snapshots[0].overall
        assert first.active == 1 and first.bytes_received == session.ingress.bytes
        sent = publish_frames(20)
        await client.send(sent)
        # Channel.Close round trip: everything before it has reached the broker.
        await client.send_method(
            commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0), 1
        )
        assert isinstance(await client.read_method(), commands.Channel.CloseOk)
        snapshots.append(collector.collect())
        assert snapshots[1].overall.bytes_received >= len(sent)
        assert snapshots[1].overall.frames_received >= 60
        assert collector.collect().overall.bytes_received == 0, "idle: no delta"
        ingress_before_close = session.ingress.bytes
        await close_cleanly(client)
        await wait_no_sessions(server)
        snapshots.append(collector.collect())
        last = snapshots[-1].overall
        assert last.active == 0 and last.removed_graceful == 1
        assert last.bytes_received == session.ingress.bytes - ingress_before_close > 0
        # Nothing lost, nothing counted twice: the sums are the session's counters.
        assert total(snapshots, "bytes_received") == session.ingress.bytes
        assert total(snapshots, "bytes_sent") == session.egress.bytes
        assert total(snapshots, "frames_received") == session.ingress.frames
        assert total(snapshots, "packets_sent") == session.egress.reads
        # Every axis saw the same session; the running totals agree.
        for axis, key in (
            (snapshots[-1].vhosts, "/"),
            (snapshots[-1].sources, "127.0.0.1"),
            (snapshots[-1].backends, f"127.0.0.1_{system_broker.port}"),
        ):
            assert axis[key] == last
        totals = collector.totals[("/", "fake")]
        assert totals.bytes_received == session.ingress.bytes
        assert totals.removed[Removal.GRACEFUL] == 1
        assert collector.collect().overall == ConnectionStats(), "the next interval is empty"


async def test_session_started_and_ended_within_one_interval_is_counted(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, port):
        collector = collector_for(server)
        client = await open_client(port)
        (session,) = server.sessions.values()
        await close_cleanly(client)
        await wait_no_sessions(server)
        snapshot = collector.collect()
        assert snapshot.overall.removed_graceful == 1
        assert snapshot.overall.bytes_received == session.ingress.bytes > 0
        assert snapshot.overall.active == 0


async def test_close_reasons() -> None:
    async def drop_after_open(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        await trio.sleep(0.2)
        await peer.aclose()

    async with fake_broker(drop_after_open) as broker, router(broker.port) as (server, port):
        collector = collector_for(server)
        # The broker drops this one.
        snapped = await open_client(port)
        # This client drops its own TCP connection.
        gone = await open_client(port)
        await gone.aclose()
        await snapped.read_method()  # the router's Close 320
        await snapped.aclose()
        await wait_no_sessions(server)
        overall = collector.collect().overall
        assert (overall.removed_broker, overall.removed_client) == (1, 1)
        assert overall.removed_graceful == 0


async def test_session_refused_in_the_handshake_counts_as_graceful_handshake() -> None:
    async with router(None) as (server, port):  # no mapping: Close 506
        collector = collector_for(server)
        client = await client_handshake(port)
        assert isinstance(await client.read_method(), commands.Connection.Close)
        await client.aclose()
        await wait_no_sessions(server)
        snapshot = collector.collect()
        assert snapshot.overall.removed_graceful == 1
        assert snapshot.overall.removed_in_handshake == 1
        assert NO_BACKEND in snapshot.backends
        assert collector.totals[("/", "")].removed[Removal.HANDSHAKE] == 1


def test_removal_table() -> None:
    assert removal(End.CLEAN) is Removal.GRACEFUL
    assert removal(End.TIMEOUT) is Removal.GRACEFUL
    assert removal(End.BROKER_GONE) is removal(End.BROKER_ERROR) is Removal.BROKER_SNAPPED
    assert removal(End.CLIENT_GONE) is removal(End.CLIENT_ERROR) is Removal.CLIENT_SNAPPED
    assert removal(None) is Removal.HANDSHAKE
    # Every End the session knows maps to something (new ones default to graceful).
    assert all(isinstance(removal(end), Removal) for end in End)


async def test_per_source_can_be_disabled_and_partial_frames_are_reported(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, port):
        collector = collector_for(server)
        client = await open_client(port)
        await open_channel(client)
        message = publish_frames(1)
        await client.send(message[:-100])  # the body frame stays incomplete
        with trio.fail_after(WAIT):
            while not collector.collect().bufferpool.bytes_current:
                await trio.sleep(0.01)
        pool = collector.collect().bufferpool
        assert 0 < pool.bytes_current < len(BODY) + 8
        assert pool.buffers_current == 1
        assert collector.collect().sources
        collector.per_source = False
        assert collector.collect().sources == {}
        await client.send(message[-100:])
        await close_cleanly(client)
        await wait_no_sessions(server)
        snapshot = collector.collect()
        assert snapshot.bufferpool.bytes_current == 0
        assert snapshot.bufferpool.bytes_highest == pool.bytes_current
        assert snapshot.sources == {} and snapshot.overall.removed_graceful == 1


async def test_totals_stop_growing_with_vhost_names_clients_make_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any vhost name can arrive in Connection.Open; Prometheus series must stay bounded."""
    monkeypatch.setattr(stats_module, "MAX_TOTALS", 2)
    async with router(None) as (server, port):  # no mapping: each is refused with 506
        collector = collector_for(server)
        for vhost in ("a", "b", "c", "d"):
            client = await client_handshake(port, vhost)
            assert isinstance(await client.read_method(), commands.Connection.Close)
            await client.aclose()
            await wait_no_sessions(server)
            collector.collect()
        assert set(collector.totals) == {("a", ""), ("b", ""), (OTHER_VHOST, "")}
        assert collector.totals[(OTHER_VHOST, "")].removed[Removal.HANDSHAKE] == 2


async def test_a_sessions_rates_are_its_last_intervals_traffic_per_second(
    system_broker: SystemBroker,
) -> None:
    async with router(system_broker.port) as (server, port):
        collector = StatsCollector(server.sessions, 0.5)
        server.session_ended.append(collector.session_ended)
        client = await open_client(port)
        (session,) = server.sessions.values()
        assert collector.session_rates(session.id) is stats_module.NO_RATES, "not collected yet"
        await open_channel(client)
        collector.collect()
        before_in, before_out = session.ingress.bytes, session.egress.bytes
        before_frames = session.ingress.frames
        sent = publish_frames(20)
        await client.send(sent)
        await client.send_method(
            commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0), 1
        )
        assert isinstance(await client.read_method(), commands.Channel.CloseOk)
        collector.collect()
        rates = collector.session_rates(session.id)
        # The delta over the interval, per second: 0.5 s, so twice the bytes moved.
        assert rates.in_bytes == (session.ingress.bytes - before_in) * 2 >= len(sent) * 2
        assert rates.out_bytes == (session.egress.bytes - before_out) * 2 > 0
        assert rates.in_frames == (session.ingress.frames - before_frames) * 2 >= 120
        collector.collect()
        assert collector.session_rates(session.id) is stats_module.NO_RATES, "idle: no rate"
        await close_cleanly(client)
        await wait_no_sessions(server)
        collector.collect()
        assert collector.session_rates(session.id) is stats_module.NO_RATES, "gone: forgotten"
