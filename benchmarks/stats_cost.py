#!/usr/bin/env python3
"""What statistics cost: router CPU with thousands of idle sessions, collection off and on.

Run from the repository root (no broker needed):

    .venv/bin/python benchmarks/stats_cost.py [--sessions 5000] [--seconds 10]

A minimal fake broker (pamqp frames, in this process) answers the handshake of every
session and then stays silent, so the sessions are idle and RabbitMQ is not loaded
with thousands of connections. For each case a fresh router process is started in
simple mode in front of it, ``--sessions`` clients connect and open, and the router's
CPU time (user + system, from /proc through psutil) is measured over ``--seconds``:

* ``baseline``: ``--cleanup-interval-ms 3600000``, so no collection happens;
* ``collect``: the default 1000 ms interval (the collector feeds /metrics' totals);
* ``collect+listen``: the same with ``amqprouter_ctl STAT LISTEN json all`` attached;
* ``collect@100ms``: ten collections a second, to see the cost of one above the
  resolution of CPU accounting (10 ms ticks).

docs/statistics.md quotes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import Popen

import psutil
import trio
from pamqp import base, commands, frame

from amqprouter.protocol import FrameReader, constants

REPO = Path(__file__).resolve().parent.parent
CTL = Path(sys.executable).parent / "amqprouter_ctl"
#: Every wait in this script is bounded by this.
TIMEOUT = 60.0
#: Handshakes in flight at once (the router's accept backlog is the limit otherwise).
CONCURRENCY = 200


def marshal(*methods: base.Frame) -> bytes:
    return b"".join(frame.marshal(method, 0) for method in methods)


START = marshal(commands.Connection.Start(server_properties={"product": "fake"}))
TUNE = marshal(commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=0))
OPEN_OK = marshal(commands.Connection.OpenOk())
START_OK = marshal(
    commands.Connection.StartOk(
        client_properties={"product": "stats-cost"}, mechanism="PLAIN", response="\0guest\0guest"
    )
)
TUNE_OK_OPEN = marshal(
    commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0),
    commands.Connection.Open(virtual_host="/"),
)


async def read_frames(
    stream: trio.SocketStream, reader: FrameReader, count: int, skip: int = 0
) -> None:
    """Wait for ``count`` frames (after ``skip`` raw bytes, the protocol header)."""
    pending = bytearray()
    while len(pending) < skip:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        pending += data
    reader.feed(bytes(pending[skip:]))
    while count:
        if reader.next_frame() is not None:
            count -= 1
            continue
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        reader.feed(data)


async def fake_broker_session(stream: trio.SocketStream) -> None:
    reader = FrameReader(frame_max=1 << 20)
    with contextlib.suppress(EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        await read_frames(stream, reader, 0, skip=len(constants.PROTOCOL_HEADER))
        await stream.send_all(START)
        await read_frames(stream, reader, 1)
        await stream.send_all(TUNE)
        await read_frames(stream, reader, 2)
        await stream.send_all(OPEN_OK)
        while await stream.receive_some(65536):
            pass


async def open_session(port: int, sessions: list[trio.SocketStream]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    reader = FrameReader(frame_max=1 << 20)
    await stream.send_all(constants.PROTOCOL_HEADER)
    await read_frames(stream, reader, 1)
    await stream.send_all(START_OK)
    await read_frames(stream, reader, 1)
    await stream.send_all(TUNE_OK_OPEN)
    await read_frames(stream, reader, 1)
    sessions.append(stream)


def start_router(
    broker_port: int, interval_ms: int, workdir: Path
) -> tuple[int, Path, Popen[bytes]]:
    """A router process in simple mode; (client port, control socket, process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    control = workdir / "control"
    command = [sys.executable, "-m", "amqprouter", "--listen-port", str(port)]
    command += ["--destination-dns", "127.0.0.1", "--destination-port", str(broker_port)]
    command += ["--control-socket", str(control), "--cleanup-interval-ms", str(interval_ms)]
    command += ["--log-directory", str(workdir / "logs")]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return port, control, process


def stop(process: Popen[bytes]) -> None:
    process.terminate()
    process.wait(TIMEOUT)


def stat_listener(control: Path) -> Popen[bytes]:
    """``amqprouter_ctl <control> STAT LISTEN json all``, its output discarded."""
    return subprocess.Popen(
        [str(CTL), str(control), "STAT", "LISTEN", "json", "all"], stdout=subprocess.DEVNULL
    )


@contextlib.asynccontextmanager
async def router(broker_port: int, interval_ms: int) -> AsyncIterator[tuple[int, Path, int]]:
    """A router process in simple mode, once it accepts; (client port, control socket, pid)."""
    with tempfile.TemporaryDirectory(prefix="stats-cost-") as workdir:
        port, control, process = start_router(broker_port, interval_ms, Path(workdir))
        try:
            with trio.fail_after(TIMEOUT):
                while True:
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            yield port, control, process.pid
        finally:
            stop(process)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(
    broker_port: int, sessions: int, seconds: float, interval_ms: int, listen: bool
) -> tuple[float, int]:
    """(router CPU fraction of one core, sessions open) for one case."""
    async with router(broker_port, interval_ms) as (port, control, pid):
        process = psutil.Process(pid)
        opened: list[trio.SocketStream] = []
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def one() -> None:
            async with limiter:
                await open_session(port, opened)

        with trio.fail_after(TIMEOUT * 5):
            async with trio.open_nursery() as nursery:
                for _ in range(sessions):
                    nursery.start_soon(one)
        listener = stat_listener(control) if listen else None
        await trio.sleep(2.0)  # settle: accept backlog drained, first snapshots done
        before, started = cpu_seconds(process), time.monotonic()
        await trio.sleep(seconds)
        used, wall = cpu_seconds(process) - before, time.monotonic() - started
        if listener is not None:
            stop(listener)
        for stream in opened:
            await trio.aclose_forcefully(stream)
        return used / wall, len(opened)


async def main(sessions: int, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, fake_broker_session, 0, host="127.0.0.1")
        )
        broker_port = listeners[0].socket.getsockname()[1]
        results = []
        for name, interval_ms, listen in (
            ("baseline", 3_600_000, False),
            ("collect", 1000, False),
            ("collect+listen", 1000, True),
            # Ten times the collections: the cost of one shows above the tick resolution.
            ("collect@100ms", 100, False),
        ):
            fraction, opened = await measure(broker_port, sessions, seconds, interval_ms, listen)
            results.append((name, fraction))
            print(
                f"{name:15} {opened} idle sessions: router CPU {fraction * 100:.2f}% of one core",
                flush=True,
            )
        base = results[0][1]
        for name, fraction in results[1:]:
            print(f"{name:15} costs {(fraction - base) * 100:+.2f}% of one core over baseline")
        per_collection = (results[3][1] - base) / 10
        print(f"one collection over {sessions} sessions: about {per_collection * 1000:.1f} ms")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 3 * args.sessions + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, args.sessions, args.seconds)
