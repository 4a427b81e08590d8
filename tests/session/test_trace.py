"""Traces and captures on a live session (session/trace.py, capture.py), in process.

The engine test runs on the real clock (the engine stamps ``time.monotonic``); the
bounds (rate, duration) on trio's virtual clock, on the task path. A trace is started
through the controller, as the control socket does, and its reply's stream is read
here as the control connection would.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncGenerator
from pathlib import Path

import dpkt
import pytest
import trio
import trio.testing
from pamqp import commands, frame

from amqprouter.control.controller import Controller
from amqprouter.protocol.frame_describe import REDACTED, FrameRecord
from amqprouter.session import Timeouts
from amqprouter.session.capture import TcpStream
from amqprouter.session.trace import human_line, json_line, open_new_file
from tests.session.test_pause import body_frame
from tests.session.wire import FakeBroker, Peer, broker_handshake, fake_broker, open_client, router

TIMEOUTS = Timeouts(
    client_handshake=5.0, connect=5.0, broker_handshake=5.0, close=0.5, disconnect=2.0, write=1.0
)


async def echo(peer: Peer, broker: FakeBroker) -> None:
    """A broker that sends back every frame it is sent."""
    await broker_handshake(peer, broker)
    while (item := await peer.read_frame(timeout=10_000)) is not None:
        await peer.send(item.raw)


async def until(condition: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.005)


async def next_line(stream: AsyncGenerator[str, None], timeout: float = 5.0) -> str:
    with trio.fail_after(timeout):
        return await stream.__anext__()


async def test_a_traced_session_leaves_the_engine_and_an_untraced_one_stays() -> None:
    async with (
        fake_broker(echo) as fake,
        router(fake.port, timeouts=TIMEOUTS, forwarding="engine") as (server, port),
    ):
        engine = server.engine
        assert engine is not None
        first, second = await open_client(port), await open_client(port)
        await until(lambda: len(engine) == 2)
        traced, untraced = sorted(server.sessions.values(), key=lambda s: s.id)
        controller = Controller(server, request_exit=lambda: None)

        reply = await controller.handle(f"SESSION TRACE {traced.id}")
        assert reply.ok and reply.stream is not None
        assert reply.text.startswith(f"# trace of session {traced.id}: ")
        # Evicted at once, exactly as a pause evicts; the other stays in the engine.
        assert len(engine) == 1
        await until(lambda: traced._link is None)  # its forward() returned: the pumps run
        assert untraced._link is not None
        assert not traced._fits_engine(engine) and untraced._fits_engine(engine)

        await first.send_method(commands.Channel.Open(), channel=1)
        assert isinstance(await first.read_method(), commands.Channel.Open)  # the echo
        sent = await next_line(reply.stream)
        echoed = await next_line(reply.stream)
        assert f" s{traced.id} client>broker ch1 method Channel.Open size=14\n" in sent
        assert f" s{traced.id} broker>client ch1 method Channel.Open size=14\n" in echoed

        # The untraced session's frames still go through the engine, and into no trace.
        reads = engine.reads
        await second.send(body_frame(1))
        assert (await second.read_frame()) is not None
        assert engine.reads > reads and untraced._link is not None
        assert untraced._trace is None
        await reply.stream.aclose()


async def test_a_trace_over_its_rate_stops_itself_and_the_session_pays_nothing_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broker(echo) as fake,
        router(fake.port, timeouts=TIMEOUTS, clock=trio.current_time) as (server, port),
    ):
        client = await open_client(port)
        [session] = server.sessions.values()
        controller = Controller(server, request_exit=lambda: None)
        reply = await controller.handle(f"SESSION TRACE {session.id} RATE 5")
        assert reply.stream is not None
        await client.send(b"".join(body_frame(n, 100) for n in range(10)))
        lines = [line async for line in reply.stream]
        assert lines[-1] == (
            f"# trace of session {session.id} stopped: more than 5 lines/s; 0 lines, 0 dropped\n"
        )
        for _ in range(10):
            assert (await client.read_frame()) is not None  # forwarded all the same
        # The next read finds no observer left and empties the slot.
        await client.send(body_frame(11, 100))
        assert (await client.read_frame()) is not None
        assert session._trace is None


async def test_a_trace_stops_at_its_duration_even_on_an_idle_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_broker(echo) as fake,
        router(fake.port, timeouts=TIMEOUTS, clock=trio.current_time) as (server, port),
    ):
        await open_client(port)
        [session] = server.sessions.values()
        controller = Controller(server, request_exit=lambda: None)
        reply = await controller.handle(f"SESSION TRACE {session.id} SECONDS 2.5")
        assert reply.stream is not None
        began = trio.current_time()
        lines = [line async for line in reply.stream]
        assert trio.current_time() - began == pytest.approx(2.5)
        assert lines == [
            f"# trace of session {session.id} stopped: 2.5s elapsed; 0 lines, 0 dropped\n"
        ]


async def test_trace_off_and_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        fake_broker(echo) as fake,
        router(fake.port, timeouts=TIMEOUTS, clock=trio.current_time) as (server, port),
    ):
        await open_client(port)
        [session] = server.sessions.values()
        controller = Controller(server, request_exit=lambda: None)
        assert (await controller.handle("SESSION TRACE 999999")).text == "Session not found.\n"
        reply = await controller.handle(f"SESSION {session.id} TRACE")
        assert reply.stream is not None
        off = await controller.handle(f"SESSION TRACE {session.id} OFF")
        assert off.text == f"Stopped 1 trace(s) of session {session.id}.\n"
        lines = [line async for line in reply.stream]
        assert lines[-1].startswith(f"# trace of session {session.id} stopped: turned off; ")
        json_off = await controller.handle(f"SESSION TRACE {session.id} OFF", as_json=True)
        assert json_off.text == '{"event": "traceOff", "stopped": 0}\n'


def test_files_are_created_new_private_and_never_through_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "new"
    os.umask(0o022)
    fd = open_new_file(str(path))
    os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    with pytest.raises(OSError) as existing:
        open_new_file(str(path))
    assert str(existing.value) == f"{path} exists (a file); the router writes only new files"

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as symlink:
        open_new_file(str(link))
    assert str(symlink.value) == f"{link} exists (a symlink); the router writes only new files"
    assert not (tmp_path / "target").exists()

    with pytest.raises(OSError) as missing:
        open_new_file(str(tmp_path / "no" / "such"))
    assert (
        str(missing.value) == f"cannot create {tmp_path / 'no' / 'such'}: No such file or directory"
    )


async def test_a_capture_is_one_tcp_stream_with_credentials_redacted(tmp_path: Path) -> None:
    """The capture's packets, read back with dpkt: the handshake, one segment a frame with
    sequence numbers that follow on, UpdateSecret's secret gone, the FIN exchange."""
    async with (
        fake_broker(echo) as fake,
        router(fake.port, timeouts=TIMEOUTS, forwarding="tasks") as (server, port),
    ):
        client = await open_client(port)
        [session] = server.sessions.values()
        controller = Controller(server, request_exit=lambda: None)
        path = tmp_path / "s.pcap"
        reply = await controller.handle(f"SESSION CAPTURE {session.id} {path}", as_json=True)
        assert json.loads(reply.text) == {
            "event": "captureStarted",
            "session": session.id,
            "path": str(path),
            "seconds": 60.0,
            "client": f"{session.client_address[0]}:{session.client_address[1]}",
            "broker": f"127.0.0.1:{fake.port}",
        }
        secret = commands.Connection.UpdateSecret(new_secret="hunter2-token", reason="refresh")
        await client.send_method(secret)
        await client.send(body_frame(1, 100))
        assert (await client.read_frame()) is not None  # the echoes
        assert (await client.read_frame()) is not None
        await client.send_method(commands.Connection.Close(200, "bye", 0, 0))
        assert isinstance(await client.read_method(), commands.Connection.Close)  # echoed
        await client.aclose()
        await until(lambda: not server.sessions)
        await until(lambda: b"hunter2" not in path.read_bytes() and _fins(path) == 2)
    packets = _packets(path)
    flags = [p.flags for p in packets]
    syn, ack, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN
    assert flags[:3] == [syn, syn | ack, ack]
    assert flags[-3:] == [fin | ack, fin | ack, ack]
    client_port, broker_port = session.client_address[1], fake.port
    assert (packets[0].sport, packets[0].dport) == (client_port, broker_port)
    payloads = [p for p in packets if p.data]
    # Each direction's sequence numbers follow on from the SYN's.
    for sport in (client_port, broker_port):
        seq = next(p.seq for p in packets if p.sport == sport) + 1
        for packet in (p for p in payloads if p.sport == sport):
            assert packet.seq == seq
            seq += len(packet.data)
    sent = [p.data for p in payloads if p.sport == client_port]
    update = frame.unmarshal(sent[0])[2]
    assert isinstance(update, commands.Connection.UpdateSecret)
    assert update.new_secret == REDACTED
    assert sent[1] == body_frame(1, 100)
    assert b"hunter2" not in path.read_bytes()


def _packets(path: Path) -> list[dpkt.tcp.TCP]:
    with path.open("rb") as file:
        return [dpkt.ethernet.Ethernet(raw).data.data for _ts, raw in dpkt.pcap.Reader(file)]


def _fins(path: Path) -> int:
    try:
        return sum(bool(p.flags & dpkt.tcp.TH_FIN) for p in _packets(path))
    except (ValueError, OSError):
        return 0


def test_a_capture_bridging_ipv6_and_ipv4_writes_ipv6_packets() -> None:
    stream = TcpStream(("2001:db8::7", 40000), ("10.0.0.5", 5672))
    packet = dpkt.ethernet.Ethernet(stream.packet(True, dpkt.tcp.TH_SYN))
    assert isinstance(packet.data, dpkt.ip6.IP6)
    assert packet.data.dst == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 5])
    segment = packet.data.data
    assert (segment.sport, segment.dport, segment.seq) == (40000, 5672, 1_000_000)
    assert stream.next_seq[True] == 1_000_001  # a SYN counts one


def test_names_a_client_chose_cannot_forge_a_line_or_reach_the_terminal() -> None:
    record = FrameRecord(
        1, "method", 40, 32, method="Basic.Publish", arguments=(("routing_key", "a\nb\x1b[31m"),)
    )
    line = human_line(7, True, 0.0, record)
    assert line == (
        "1970-01-01T00:00:00.000000Z s7 client>broker ch1 method Basic.Publish "
        "routing_key='a\\nb\\x1b[31m' size=40\n"
    )
    assert line.count("\n") == 1 and "\x1b" not in line
    decoded = json.loads(json_line(7, False, 0.0, record))
    assert decoded["routingKey"] == "a\nb\x1b[31m"  # JSON escapes it; the value is exact
    assert "\x1b" not in json_line(7, False, 0.0, record)
