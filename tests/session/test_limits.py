"""LIMIT at the session (in-process router, trio's MockClock): the Open-time refusal
with its exact Close after 750 ms, before any broker connection and before a paused
vhost's hold; CONNECTIONS; the data rate's back-pressure, also applied live."""

from __future__ import annotations

import trio
import trio.testing
from pamqp import commands

from amqprouter.observe.prometheus import metrics_text
from amqprouter.observe.stats import StatsCollector
from amqprouter.protocol import close_frame, constants
from amqprouter.session import End
from amqprouter.session.opening import LIMITED_CLOSE_DELAY
from tests.session.test_pause import SLOW, Recorder, body_frame
from tests.session.wire import (
    client_handshake,
    fake_broker,
    open_and_idle,
    open_client,
    router,
    wait_no_sessions,
)


async def test_conn_rate_refusal_after_750ms_and_no_broker_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("CONN_RATE", "v", 0)
        server.vhosts.paused.add("v")  # the limit comes before a paused vhost's hold
        client = await client_handshake(port, "v")
        started = trio.current_time()
        item = await client.read_frame(timeout=10)
        assert item is not None
        assert round(trio.current_time() - started, 3) == LIMITED_CLOSE_DELAY == 0.75
        assert item.raw == close_frame(
            constants.RESOURCE_ERROR, "The connection for v, is limited by proxy.", 0, 0
        )
        [session] = server.sessions.values()
        assert session.limited
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
        assert broker.accepted == []
        assert server.limits.concurrent("v") == 0


async def test_a_disconnect_ends_the_750ms_wait(autojump_clock: trio.testing.MockClock) -> None:
    async with router(None, timeouts=SLOW) as (server, port):
        server.limits.set("CONN_RATE", None, 0)
        await client_handshake(port, "v")
        with trio.fail_after(1):
            while not server.sessions or not next(iter(server.sessions.values())).limited:
                await trio.sleep(0.01)
        started = trio.current_time()
        for session in list(server.sessions.values()):
            session.disconnect(End.OPERATOR_FORCED, "test")
        await wait_no_sessions(server)
        assert trio.current_time() - started < LIMITED_CLOSE_DELAY


async def test_connections_limit_refuses_past_n_and_frees_a_place_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("CONNECTIONS", "/", 1)
        first = await open_client(port)
        second = await client_handshake(port)
        item = await second.read_frame(timeout=10)
        assert item is not None
        assert item.raw == close_frame(
            constants.RESOURCE_ERROR,
            "The connection for /, is limited by proxy: at most 1 concurrent connections.",
            0,
            0,
        )
        await second.send_method(commands.Connection.CloseOk())
        await first.stream.aclose()
        with trio.fail_after(10):
            while server.limits.concurrent("/"):
                await trio.sleep(0.01)
        third = await open_client(port)
        assert server.limits.concurrent("/") == 1
        await third.stream.aclose()
        assert len(broker.accepted) == 2


async def test_alarm_only_logs_and_admits(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("CONN_RATE_ALARM", None, 0)
        await open_client(port)
        await open_client(port)
        assert [s.alarmed for s in server.sessions.values()] == [True, True]
        assert len(broker.accepted) == 2


async def _send_and_time(data_rate: int, frames: int, *, live: bool) -> float:
    """Seconds (virtual) until a broker has every byte of ``frames`` 1000-byte bodies
    sent at once by a client whose vhost has ``data_rate`` (set before Open, or while
    forwarding when ``live``)."""
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        if not live:
            server.limits.set("DATA_RATE", "/", data_rate)
        client = await open_client(port)
        await recorder.opened.wait()
        [session] = server.sessions.values()
        if live:
            assert session.data_budget is None
            server.limits.set("DATA_RATE", "/", data_rate)
            assert server.apply_data_limits("/") == 1
            # The read the pump is parked on was sized before the limit: it may take
            # one read more (this frame); the reads after it follow the budget.
            await client.send(body_frame(0))
            with trio.fail_after(10):
                while not recorder.data():
                    await trio.sleep(0.01)
            await trio.sleep(1)  # the window of that read ends
            recorder.frames.clear()
        assert session.data_budget is not None
        sent = b"".join(body_frame(n) for n in range(frames))
        started = trio.current_time()
        await client.send(sent)
        with trio.fail_after(1000):
            while len(recorder.data()) < len(sent):
                await trio.sleep(0.01)
        assert recorder.data() == sent  # every byte, in order
        return trio.current_time() - started


async def test_data_rate_holds_the_client_back(autojump_clock: trio.testing.MockClock) -> None:
    # 20 frames of 1008 bytes at 4000 bytes/s: about 5 s (a read may overshoot).
    elapsed = await _send_and_time(4000, 20, live=False)
    assert 4.0 <= elapsed <= 6.0


async def test_data_rate_passes_no_more_than_the_rate_and_one_bucket_in_any_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client sending 5 s of the rate at once: at every moment t after it did, the
    broker has at most rate * t bytes and the bucket the connection started with (a
    tenth of the rate), so at most 1.1 times the rate in the first second (one-second quota
    windows passed a quota at once and another a second later: twice the rate)."""
    rate = 4000
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("DATA_RATE", "/", rate)
        client = await open_client(port)
        await recorder.opened.wait()
        [session] = server.sessions.values()
        assert session.data_budget is not None and session.data_budget.burst == rate // 10
        sent = b"".join(body_frame(n) for n in range(20))  # 20,160 bytes
        started = trio.current_time()
        await client.send(sent)
        samples = []
        while len(recorder.data()) < len(sent):
            await trio.sleep(0.01)
            samples.append((trio.current_time() - started, len(recorder.data())))
        assert recorder.data() == sent
    for elapsed, received in samples:
        assert received <= rate * elapsed + rate // 10, (elapsed, received)
    assert max(received for elapsed, received in samples if elapsed <= 1.02) > rate * 0.9


async def test_data_rate_change_applies_to_a_live_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    elapsed = await _send_and_time(4000, 20, live=True)
    assert 4.0 <= elapsed <= 6.0


async def test_limited_and_alarmed_sessions_are_counted_per_vhost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        collector = StatsCollector(server.sessions, 1.0)
        server.session_ended.append(collector.session_ended)
        server.limits.set("CONN_RATE", "v", 0)
        server.limits.set("CONN_RATE_ALARM", "w", 0)
        limited = await client_handshake(port, "v")
        assert await limited.read_method(timeout=10) is not None
        await limited.send_method(commands.Connection.CloseOk())
        alarmed = await open_client(port, "w")
        await alarmed.stream.aclose()
        await wait_no_sessions(server)
        snapshot = collector.collect()
        assert (snapshot.vhosts["v"].limited, snapshot.vhosts["v"].alarmed) == (1, 0)
        assert (snapshot.vhosts["w"].limited, snapshot.vhosts["w"].alarmed) == (0, 1)
        assert snapshot.overall.limited == 1
        text = metrics_text(collector, listeners=1)
        assert 'amqprouter_connections_limited_total{vhost="v",backend=""} 1' in text
        assert 'amqprouter_connections_alarmed_total{vhost="w",backend="fake"} 1' in text
        assert collector.collect().vhosts.get("v") is None  # counted once


async def test_default_data_rate_from_accept_and_the_vhost_value_at_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("DATA_RATE", None, 5000)
        server.limits.set("DATA_RATE", "/", 7000)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            while not server.sessions:
                await trio.sleep(0.01)
        [session] = server.sessions.values()
        assert session.data_budget is not None and session.data_budget.limit == 5000
        await stream.aclose()
        await wait_no_sessions(server)
        await open_client(port)
        [session] = server.sessions.values()
        assert session.data_budget is not None and session.data_budget.limit == 7000


async def test_lifting_the_limit_live_drops_the_budget_and_its_small_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.limits.set("DATA_RATE", "/", 1000)
        client = await open_client(port)
        await recorder.opened.wait()
        [session] = server.sessions.values()
        server.limits.disable("DATA_RATE", "/")
        server.apply_data_limits("/")
        assert session.data_budget is not None and session.data_budget.inert
        # The pump was sized for 1000 bytes; after one read it is back to full reads.
        sent = b"".join(body_frame(n) for n in range(100))
        started = trio.current_time()
        await client.send(sent)
        with trio.fail_after(100):
            while recorder.data() != sent:
                await trio.sleep(0.01)
        assert trio.current_time() - started < 1.0
        assert session.data_budget is None


async def test_data_rate_alarm_never_holds_back_and_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        collector = StatsCollector(server.sessions, 1.0)
        server.session_ended.append(collector.session_ended)
        server.limits.set("DATA_RATE_ALARM", None, 100)
        client = await open_client(port)
        await recorder.opened.wait()
        sent = b"".join(body_frame(n) for n in range(50))
        started = trio.current_time()
        await client.send(sent)
        with trio.fail_after(100):
            while recorder.data() != sent:
                await trio.sleep(0.01)
        assert trio.current_time() - started < 1.0
        await client.stream.aclose()
        await wait_no_sessions(server)
        assert collector.collect().vhosts["/"].alarmed == 1
