#!/usr/bin/env python3
"""amqprouter benchmark: every workload direct to RabbitMQ, through HAProxy (the peer) and
through the router, in turns, side by side.

Run from the repository root (RabbitMQ on 127.0.0.1:5672, guest/guest; scripts/bench-setup
installs HAProxy):

    .venv/bin/python benchmarks/bench.py [--quick] [--only publish,confirm,handshake,rss]
                                         [--repeat N] [--json FILE] [--check]
                                         [--peer auto|haproxy|none] [--tls]

docs/benchmark.md explains the workloads and how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import select
import shlex
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import trio
from haproxy_peer import HAProxy, PeerError, Route, find_haproxy, haproxy_version
from pamqp import base, body, frame, header
from pamqp.commands import Basic, Channel, Confirm, Connection
from tls_setup import (
    SERVER_NAME,
    TlsFiles,
    TlsSetupError,
    client_context,
    make_certs,
    start_tls_node,
    tls_node,
)

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
IO_TIMEOUT = 30.0  # every socket operation; nothing in this script waits forever
FRAME_MAX = 131072  # what we ask for in TuneOk: a 64 KiB body then fits in a single body frame
CHUNK_BYTES = 2 << 20  # publishes are pre-encoded and written in ~2 MiB sendall() calls
# Publishes go to the default exchange with a routing key no queue has, so RabbitMQ drops them
# right after parsing: the broker does the least work possible and the proxy's cost shows.
UNROUTABLE_KEY = "amqprouter.bench.unroutable.6f1c"
DEFAULT_ROUTER_CMD = (
    "{python} -m amqprouter --listen-port {port} --destination-dns 127.0.0.1"
    " --destination-port {broker_port} --control-socket {control_socket}"
    " --log-directory {log_directory}"
)
# A trivial trio TCP relay (see relay_main): a yardstick for what any trio proxy costs.
RELAY_CMD = "{python} {bench} --relay {port} {broker_port}"

FRAME_HDR = struct.Struct(">BHI")
METHOD_FRAME, FRAME_END = 1, 0xCE
FATAL_METHODS = {m.index: m for m in (Connection.Close, Channel.Close, Basic.Nack, Basic.Return)}

Sample = dict[str, float]
# storm: the reconnection storm; distance: a broker behind a delaying relay (run_distance);
# priming: the router without and with primed connections on loopback (run_loopback_priming);
# null: publishes into benchmarks/null_broker.py, a broker that drops them (run_null);
# pooling: PHP-style clients, the router without and with --pool (run_pooling).
NAMES = (
    "publish",
    "confirm",
    "handshake",
    "rss",
    "storm",
    "distance",
    "priming",
    "null",
    "pooling",
)


class BenchError(Exception):
    """A workload could not run (peer closed, timeout, router died...): reported, not a trace."""


def encode(channel: int, *frames: base.Frame | header.ContentHeader | body.ContentBody) -> bytes:
    return b"".join(frame.marshal(f, channel) for f in frames)


START_OK = encode(
    0,
    Connection.StartOk(
        client_properties={"product": "amqprouter-bench"},
        mechanism="PLAIN",
        response="\0guest\0guest",
    ),
)
CLOSE = encode(0, Connection.Close(200, "bench done", 0, 0))
_tune_replies: dict[bytes, tuple[int, bytes]] = {}  # Tune payload -> (frame_max, TuneOk+Open)


def tune_reply(tune_args: bytes) -> tuple[int, bytes]:
    """TuneOk (heartbeat 0: no heartbeats to handle) + Connection.Open, cached per Tune payload
    so the handshake workload spends its CPU on sockets, not on pamqp."""
    if tune_args not in _tune_replies:
        tune = Connection.Tune()
        tune.unmarshal(tune_args)
        # RabbitMQ rejects 0 ("unlimited") or anything above its own limits here.
        frame_max = min(tune.frame_max or FRAME_MAX, FRAME_MAX)
        ok = Connection.TuneOk(tune.channel_max or 2047, frame_max, 0)
        _tune_replies[tune_args] = (frame_max, encode(0, ok, Connection.Open("/")))
    return _tune_replies[tune_args]


class AmqpClient:
    """Blocking raw-socket AMQP 0.9.1 client with just enough protocol for the workloads.

    pika & co. cost tens of microseconds of Python per message; here publishes are
    pre-encoded bytes, so the client is never what limits the figures."""

    def __init__(self, port: int, label: str, tls: ssl.SSLContext | None = None) -> None:
        self.label = label
        self.frame_max = FRAME_MAX
        self.buf = bytearray()
        self.opened = False
        try:
            self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        except OSError as e:
            raise BenchError(f"{label}: cannot connect to {HOST}:{port}: {e}") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            # The TLS handshake happens here, inside the connection's time: part of what the
            # handshake workload measures. An SSLSocket's sendall/recv are used as before.
            plain = self.sock
            try:
                self.sock = tls.wrap_socket(plain, server_hostname=SERVER_NAME)
            except (OSError, ssl.SSLError) as e:
                plain.close()
                raise BenchError(f"{label}: TLS handshake failed: {e}") from e

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError as e:
            raise BenchError(f"{self.label}: peer stopped reading for {IO_TIMEOUT:.0f}s") from e
        except OSError as e:
            raise BenchError(f"{self.label}: send failed: {e}") from e

    def _recv(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except TimeoutError as e:
            raise BenchError(f"{self.label}: no reply within {IO_TIMEOUT:.0f}s") from e
        except OSError as e:
            raise BenchError(f"{self.label}: recv failed: {e}") from e
        if not data:
            raise BenchError(f"{self.label}: connection closed by peer")
        self.buf += data

    def _pop_frame(self) -> tuple[int, bytes] | None:
        """(frame type, payload) of the next complete frame in the buffer, if any."""
        buf = self.buf
        if len(buf) < 7:
            return None
        if buf[:4] == b"AMQP":  # the peer's protocol header: it refused our version
            raise BenchError(f"{self.label}: peer rejected the protocol header")
        ftype, _channel, size = FRAME_HDR.unpack_from(buf)
        end = 8 + size
        if len(buf) < end:
            return None
        if buf[end - 1] != FRAME_END:
            raise BenchError(f"{self.label}: malformed frame (bad frame-end octet)")
        payload = bytes(buf[7 : end - 1])
        del buf[:end]
        if ftype == METHOD_FRAME and (method := FATAL_METHODS.get(_index(payload))):
            m = method()
            m.unmarshal(payload[4:])
            detail = getattr(m, "reply_text", "")
            raise BenchError(f"{self.label}: got {m.name} {getattr(m, 'reply_code', '')} {detail}")
        return ftype, payload

    def wait_method(self, want: type[base.Frame]) -> bytes:
        """Read until method `want` arrives (others are skipped); returns its arguments."""
        while True:
            got = self._pop_frame()
            if got is None:
                self._recv()
            elif got[0] == METHOD_FRAME and _index(got[1]) == want.index:
                return got[1][4:]

    def drain(self) -> None:
        """Read and discard whatever the peer has sent, without blocking; fails on a Close."""
        # Records already decrypted (pending) are invisible to select(): read them too.
        while self._pending() or select.select([self.sock], [], [], 0)[0]:
            self._recv()
            while self._pop_frame() is not None:
                pass

    def _pending(self) -> int:
        return self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0

    def handshake(self) -> None:
        self.send(header.ProtocolHeader().marshal())
        self.wait_method(Connection.Start)
        self.send(START_OK)
        self.frame_max, reply = tune_reply(self.wait_method(Connection.Tune))
        self.send(reply)  # TuneOk and Open pipelined in one write, as most clients do
        self.wait_method(Connection.OpenOk)
        self.opened = True

    def open_channel(self) -> None:
        self.send(encode(1, Channel.Open()))
        self.wait_method(Channel.OpenOk)

    def sync(self) -> None:
        """A synchronous round trip on channel 1. The broker handles a channel's frames in
        order, so the QosOk proves every publish sent before it has been processed."""
        self.send(encode(1, Basic.Qos(prefetch_count=0)))
        self.wait_method(Basic.QosOk)

    def close(self) -> None:
        try:
            self.send(CLOSE)
            self.wait_method(Connection.CloseOk)
        finally:
            self.sock.close()


def _index(payload: bytes) -> int:
    return int.from_bytes(payload[:4], "big")


def encode_publish(frame_max: int, size: int) -> bytes:
    """Basic.Publish + content header + body frame(s) split to respect frame_max."""
    payload = b"x" * size
    step = frame_max - 8  # frame_max counts the 7-byte header and the frame-end octet
    parts = [
        encode(1, Basic.Publish(exchange="", routing_key=UNROUTABLE_KEY)),
        encode(1, header.ContentHeader(body_size=size)),
    ]
    parts += [encode(1, body.ContentBody(payload[i : i + step])) for i in range(0, size, step)]
    return b"".join(parts)


# --- measuring CPU -------------------------------------------------------------------------


def proc_cpu(proc: Any) -> float:
    """User+system CPU seconds of a psutil process and its live children (0 if gone)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


@dataclass
class Meter:
    """Wall time plus CPU % (of one core) of this generator and of the watched processes."""

    procs: dict[str, Any]
    proxy: str | None = None  # which of procs is the proxy on this side ("router", "haproxy")
    wall: float = 0.0
    cpu: Sample = field(default_factory=dict)
    cpu_seconds: Sample = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before = {name: proc_cpu(p) for name, p in self.procs.items()}
        busy0, gen0, t0 = busy_cpu(), time.process_time(), time.perf_counter()
        yield
        self.wall = time.perf_counter() - t0
        self.cpu["gen_cpu"] = 100 * (time.process_time() - gen0) / self.wall
        for name, p in self.procs.items():
            self.cpu_seconds[name] = proc_cpu(p) - before[name]
            self.cpu[f"{name}_cpu"] = 100 * self.cpu_seconds[name] / self.wall
        # Whatever else kept the machine busy meanwhile: the noise to keep in mind.
        busy = 100 * (busy_cpu() - busy0) / self.wall
        self.cpu["other_cpu"] = max(0.0, busy - sum(self.cpu.values()))


def busy_cpu() -> float:
    """Non-idle CPU seconds of the whole machine, all cores (steal counts: it is noise too)."""
    t = psutil.cpu_times()._asdict()
    idle = ("idle", "iowait", "guest", "guest_nice")  # guest time is already in user
    return float(sum(v for k, v in t.items() if k not in idle))


def wait_quiet(max_wait: float) -> None:
    """--wait-quiet: before a round (direct, haproxy, router), wait (bounded) for the machine to
    be idle, so a burst of unrelated load is less likely to land on one side only."""
    deadline = time.monotonic() + max_wait
    while max_wait > 0 and (busy := psutil.cpu_percent(1.0) * (os.cpu_count() or 1)) > 25:
        if time.monotonic() > deadline:
            print(f"  (machine still busy after {max_wait:g}s: {busy:.0f}% CPU; going on)")
            return


# --- workloads: each takes a port and returns one sample -----------------------------------


@contextlib.contextmanager
def amqp_session(
    port: int, label: str, channel: bool = True, tls: ssl.SSLContext | None = None
) -> Iterator[AmqpClient]:
    """An open connection (and channel 1): closed with Close/CloseOk after success, dropped
    after an error (waiting for a CloseOk then could only hide the first error)."""
    c = AmqpClient(port, label, tls)
    try:
        c.handshake()
        if channel:
            c.open_channel()
        yield c
        c.close()
    finally:
        c.sock.close()


def bench_publish(
    port: int, label: str, meter: Meter, size: int, count: int, tls: ssl.SSLContext | None = None
) -> Sample:
    with amqp_session(port, label, tls=tls) as c:
        one = encode_publish(c.frame_max, size)
        per_chunk = max(1, CHUNK_BYTES // len(one))
        chunk, rest = one * per_chunk, one * (count % per_chunk)
        c.send(one * min(count, 1000))  # warm-up: connection, router path, broker channel
        c.sync()
        with meter.measure():
            for _ in range(count // per_chunk):
                c.send(chunk)
                c.drain()  # heartbeats are off; this only catches a Close early
            c.send(rest)
            c.sync()
    return {
        "msg_s": count / meter.wall,
        "mb_s": count * size / meter.wall / 1e6,
        "seconds": meter.wall,
        **meter.cpu,
    }


def bench_confirm(
    port: int, label: str, meter: Meter, count: int, tls: ssl.SSLContext | None = None
) -> Sample:
    with amqp_session(port, label, tls=tls) as c:
        c.send(encode(1, Confirm.Select()))
        c.wait_method(Confirm.SelectOk)
        msg = encode_publish(c.frame_max, 1024)
        for _ in range(100):  # warm-up, not recorded
            c.send(msg)
            c.wait_method(Basic.Ack)
        lat = []
        clock = time.perf_counter_ns
        with meter.measure():
            for _ in range(count):
                t0 = clock()
                c.send(msg)
                c.wait_method(Basic.Ack)
                lat.append(clock() - t0)
    return {
        "p50_us": statistics.median(lat) / 1e3,
        "p99_us": statistics.quantiles(lat, n=100)[98] / 1e3,
        **meter.cpu,
    }


def bench_ping_pong(
    port: int, label: str, meter: Meter, count: int, tls: ssl.SSLContext | None = None
) -> Sample:
    """Basic.Qos / Qos-Ok round trips on one channel: the smallest synchronous exchange
    (two frames of 19 and 12 bytes), so the proxy's share of a round trip shows most."""
    with amqp_session(port, label, tls=tls) as c:
        for _ in range(100):  # warm-up, not recorded
            c.sync()
        lat = []
        clock = time.perf_counter_ns
        with meter.measure():
            for _ in range(count):
                t0 = clock()
                c.sync()
                lat.append(clock() - t0)
    return {
        "p50_us": statistics.median(lat) / 1e3,
        "p99_us": statistics.quantiles(lat, n=100)[98] / 1e3,
        **meter.cpu,
    }


def one_handshake(port: int, label: str, tls: ssl.SSLContext | None = None) -> None:
    """Full open (header, StartOk, TuneOk+Open, OpenOk), Close/CloseOk, socket closed."""
    with amqp_session(port, label, channel=False, tls=tls):
        pass


def tls_session_info(port: int, label: str, tls: ssl.SSLContext) -> str:
    """Protocol version and cipher one connection negotiates (opened and closed cleanly)."""
    with amqp_session(port, label, channel=False, tls=tls) as c:
        sock = c.sock
        if not isinstance(sock, ssl.SSLSocket):
            return "not TLS"
        cipher = sock.cipher()
        return f"{sock.version()} {cipher[0] if cipher else ''}"


def in_threads(workers: int, fn: Callable[[int], None]) -> None:
    """Run fn(worker_no) in `workers` threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=IO_TIMEOUT)
            fn(i)
        except BaseException as e:  # reported to the main thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10 * IO_TIMEOUT  # sockets time out well before this
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise BenchError("worker threads did not finish in time")
    if errors:
        raise errors[0]


def bench_handshake(
    port: int,
    label: str,
    meter: Meter,
    workers: int,
    each: int,
    tls: ssl.SSLContext | None = None,
) -> Sample:
    def worker(_i: int) -> None:
        for _ in range(each):
            one_handshake(port, label, tls)

    with meter.measure():
        in_threads(workers, worker)  # workers=1 is the sequential case
    sample = {"conn_s": workers * each / meter.wall, **meter.cpu}
    if meter.proxy is not None:  # the proxy's CPU per connection it carried (TLS: per session)
        sample["proxy_us_conn"] = 1e6 * meter.cpu_seconds[meter.proxy] / (workers * each)
    return sample


# --- pooling mode: short-lived clients (docs/pooling.md) ------------------------------------


def one_php_request(port: int, label: str) -> None:
    """What a PHP request does: connect, open a channel, publish one 1 KiB message with a
    confirm, close (Connection.Close / Close-Ok), socket closed."""
    with amqp_session(port, label) as c:
        c.send(encode(1, Confirm.Select()))
        c.wait_method(Confirm.SelectOk)
        c.send(encode_publish(c.frame_max, 1024))
        c.wait_method(Basic.Ack)


def bench_php(port: int, label: str, meter: Meter, workers: int, each: int) -> Sample:
    def worker(_i: int) -> None:
        for _ in range(each):
            one_php_request(port, label)

    one_php_request(port, label)  # warm-up: a pooled router opens its broker connection
    with meter.measure():
        in_threads(workers, worker)  # workers=1 is the sequential case
    sample = {"conn_s": workers * each / meter.wall, **meter.cpu}
    if meter.proxy is not None:
        sample["proxy_us_conn"] = 1e6 * meter.cpu_seconds[meter.proxy] / (workers * each)
    return sample


def run_pooling(args: argparse.Namespace, broker: Any) -> list[Result]:
    """--only pooling: direct, the router, and the router with --pool, in turns. The PHP
    loop (sequential and 32 in parallel), and publishing 1 KiB through a pooled session
    (against the unpooled router's figure: issue 24 asks for >= 0.85x). Two Results per
    workload: the plain router, then the pooled one under the router's keys."""
    q = 10 if args.quick else 1
    found = [
        Workload(
            "php",
            "php sequential",
            functools.partial(bench_php, workers=1, each=300 // q),
            CONNS,
        ),
        Workload(
            "php",
            "php 32 parallel",
            functools.partial(bench_php, workers=32, each=20 // q),
            CONNS,
        ),
        Workload(
            "publish",
            "publish 1 KiB",
            functools.partial(bench_publish, size=1024, count=600_000 // q),
            RATE,
        ),
    ]
    print("pooling: direct, the router, the router with --pool (no HAProxy: it cannot pool)")
    with contextlib.ExitStack() as stack:
        routers = {"router": args.router_cmd, "pooled": f"{args.router_cmd} --pool"}
        sides = two_router_sides(stack, broker, args.broker_port, routers, None)
        results = []
        for w in found:
            print(f"{w.label}:", flush=True)
            both = run_interleaved(w, args, sides)
            for side, name in (("router", "plain"), ("pooled", "pooled")):
                samples: dict[str, list[Sample]] = {"direct": both.samples["direct"]}
                samples["router"] = as_router(both.samples[side], side)
                targets = POOLED_TARGET if side == "pooled" and w.name == "php" else {}
                results.append(Result(f"{w.label}, {name}", samples, w.metrics, targets))
    return results


# --- the reconnection storm: every client of a lost broker reconnecting at once --------------

STORM_CLIENTS = 5000
STORM_IN_FLIGHT = 64  # the broker holds ~830 connections at once; 64 in flight stays far below


def storm_client(port: int, label: str) -> float:
    """One reconnecting client, as a real one does it: open (timed until Open-Ok), open a
    channel, close; the seconds from its TCP connect to the Open-Ok."""
    began = time.perf_counter()
    c = AmqpClient(port, label)
    try:
        c.handshake()
        took = time.perf_counter() - began
        c.open_channel()
        c.close()
    finally:
        c.sock.close()
    return took


def bench_storm(port: int, label: str, meter: Meter, clients: int, in_flight: int) -> Sample:
    """``clients`` clients, ``in_flight`` at a time, each one handshake, a channel and a close:
    how long until all were served, the p99 of one client's handshake, and the proxy's CPU
    (user + system from /proc/PID/stat, through psutil) per handshake."""
    started = iter(range(clients))  # next() on a range iterator is atomic under the GIL
    latencies: list[float] = []

    def worker(_i: int) -> None:
        for _ in started:
            latencies.append(storm_client(port, label))

    with meter.measure():
        in_threads(in_flight, worker)
    sample = {
        "storm_s": meter.wall,
        "p50_us": 1e6 * statistics.median(latencies),
        "p99_us": 1e6 * statistics.quantiles(latencies, n=100)[98],
        **meter.cpu,
    }
    if meter.proxy is not None:
        sample["proxy_us_conn"] = 1e6 * meter.cpu_seconds[meter.proxy] / clients
    return sample


def storm_workloads(quick: bool) -> list[Workload]:
    """The storm: 5,000 clients (500 with --quick), 64 in flight."""
    clients = STORM_CLIENTS // 10 if quick else STORM_CLIENTS
    return [
        Workload(
            "storm",
            f"storm {clients:,} x{STORM_IN_FLIGHT}",
            functools.partial(bench_storm, clients=clients, in_flight=STORM_IN_FLIGHT),
            STORM,
            {"storm_s": Target("peer", "<=", 1.2)},
        )
    ]


# --- a broker at a distance: every side through the same delaying relay (delay_relay.py) ----

DISTANCE_DELAY_MS = 0.5  # each way: a round trip of 1 ms, as between two hosts of a region
DISTANCE_PRIMED = 8  # --primed-connections of the primed router (the size usage.md advises)


def timed_open(port: int, label: str) -> float:
    """One client's open, timed from its TCP connect to the Open-Ok; then closed."""
    began = time.perf_counter()
    with amqp_session(port, label, channel=False):
        return time.perf_counter() - began


def bench_spaced_open(port: int, label: str, meter: Meter, count: int, gap: float) -> Sample:
    """One client at a time, ``gap`` seconds apart (a primed pool refills in between):
    what one reconnecting client waits, p50 and p99 of connect → Open-Ok."""
    for _ in range(10):  # warm-up: the router's pool learns the demand
        timed_open(port, label)
        time.sleep(gap)
    took = []
    with meter.measure():
        for _ in range(count):
            took.append(timed_open(port, label))
            time.sleep(gap)
    return {
        "p50_us": 1e6 * statistics.median(took),
        "p99_us": 1e6 * statistics.quantiles(took, n=100)[98],
        **meter.cpu,
    }


class DelayRelay:
    """benchmarks/delay_relay.py as a subprocess in front of the broker: started listening,
    always stopped."""

    def __init__(self, broker_port: int, delay_ms: float) -> None:
        self.port = free_port()
        script = Path(__file__).resolve().parent / "delay_relay.py"
        self.cmd = [sys.executable, str(script), str(self.port), str(broker_port)]
        self.cmd += ["--delay-ms", str(delay_ms)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DelayRelay:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise BenchError(f"the delay relay did not start: {' '.join(self.cmd)}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_distance(args: argparse.Namespace, broker: Any, haproxy_bin: str | None) -> list[Result]:
    """--only distance: every side through one delaying relay in front of the broker (the
    router near its clients, the broker a network round trip away)."""
    with DelayRelay(args.broker_port, DISTANCE_DELAY_MS) as relay:
        print(f"distance: every side through a relay adding {DISTANCE_DELAY_MS:g} ms each way")
        return run_priming(args, broker, haproxy_bin, relay.port, "far")


def run_loopback_priming(
    args: argparse.Namespace, broker: Any, haproxy_bin: str | None
) -> list[Result]:
    """--only priming: the same A/B on loopback, with the CPU-bound workloads (32 in
    parallel, the storm), where priming can only cost."""
    print("priming: the router without and with primed connections, the broker on loopback")
    return run_priming(args, broker, haproxy_bin, args.broker_port, "near")


def two_router_sides(
    stack: contextlib.ExitStack,
    broker: Any,
    broker_port: int,
    routers: dict[str, str],
    hap: HAProxy | None,
) -> Sides:
    """Direct, HAProxy (if any) and one router per ``routers`` entry (side -> command),
    each started in ``stack``: the sides of an A/B of two router settings."""
    ports = {"direct": broker_port}
    procs: dict[str, Any] = {"broker": broker}
    checks = []
    if hap is not None:
        ports["haproxy"], procs["haproxy"] = hap.port("amqp"), hap.ps
        checks.append(hap.check_alive)
    for side, cmd in routers.items():
        router = stack.enter_context(Router(cmd, 0, broker_port, what=f"{side} router"))
        ports[side], procs[side] = router.port, router.ps
        checks.append(router.check_alive)
    return Sides(ports, procs, checks)


def as_router(samples: list[Sample], side: str) -> list[Sample]:
    """A second router's samples under the router's keys, for the table."""
    return [{k.replace(f"{side}_", "router_"): v for k, v in s.items()} for s in samples]


def run_priming(
    args: argparse.Namespace, broker: Any, haproxy_bin: str | None, broker_port: int, where: str
) -> list[Result]:
    """Direct, HAProxy and the router without and with primed connections, in turns, all
    in front of ``broker_port``. Two Results per workload: the router unprimed, then
    primed (``where`` starts their labels)."""
    q = 10 if args.quick else 1
    found = [
        Workload(
            "open",
            "open, one at a time",
            functools.partial(bench_spaced_open, count=300 // q, gap=0.01),
            LATENCY,
        ),
        Workload(
            "handshakes",
            "handshake sequential",
            functools.partial(bench_handshake, workers=1, each=500 // q),
            CONNS,
        ),
    ]
    if where == "near":
        found += [
            Workload(
                "x32",
                "handshake 32 parallel",
                functools.partial(bench_handshake, workers=32, each=40 // q),
                CONNS,
            ),
            *storm_workloads(args.quick),
        ]
    with contextlib.ExitStack() as stack:
        hap = None
        if haproxy_bin is not None:
            hap = stack.enter_context(
                HAProxy(haproxy_bin, [Route("amqp", free_port(), broker_port)])
            )
        routers = {
            "router": f"{args.router_cmd} --primed-connections 0",
            "primed": f"{args.router_cmd} --primed-connections {DISTANCE_PRIMED}",
        }
        sides = two_router_sides(stack, broker, broker_port, routers, hap)
        results = []
        for w in found:
            print(f"{where} {w.label}:", flush=True)
            both = run_interleaved(w, args, sides)
            for side, name in (("router", "primed 0"), ("primed", f"primed {DISTANCE_PRIMED}")):
                samples: dict[str, list[Sample]] = {
                    k: both.samples[k] for k in ("direct", "haproxy") if k in both.samples
                }
                # The primed router's samples under the router's keys, for the table.
                samples["router"] = as_router(both.samples[side], side)
                targets = {}
                if where == "far" and side == "primed" and w.name == "open":
                    # Priming's reason to exist: one client's open beats going direct.
                    targets = {"p50_us": Target("direct", "<=", 1.0)}
                label = f"{where} {w.name}, {name}"
                results.append(Result(label, samples, w.metrics, targets))
    return results


def bench_rss(router: Router, count: int) -> Sample:
    """Router RSS growth per fully-open idle connection (router only: broker memory is not ours)."""
    label = f"rss via router :{router.port}"
    for _ in range(20):  # warm-up: first-connection allocations should not count per session
        one_handshake(router.port, label)
    time.sleep(1.0)
    before = router.rss()
    conns: list[AmqpClient] = []
    lock = threading.Lock()
    workers = 16

    def opener(i: int) -> None:
        for _ in range(i, count, workers):
            c = AmqpClient(router.port, label)
            with lock:
                conns.append(c)
            c.handshake()

    def closer(i: int) -> None:
        for c in conns[i::workers]:
            with contextlib.suppress(BenchError):
                c.close() if c.opened else c.sock.close()  # no CloseOk from a half-open one

    try:
        in_threads(workers, opener)
        time.sleep(1.5)  # let the router settle (buffers, any lazily started tasks)
        router.check_alive()
        after = router.rss()
    finally:
        in_threads(workers, closer)
    return {
        "kib_per_session": (after - before) / count / 1024,
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
    }


# --- the router subprocess -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def port_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
        return True
    return False


def unix_accepts(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1.0)
        s.connect(str(path))  # the router replies to an empty command line; we send none
        return True
    return False


class Router:
    """The router under test as a subprocess: started ready, always stopped, output kept.

    With `setup` (control mode), the router starts with nothing configured and each command
    is sent with amqprouter_ctl once its control socket answers; one of them must start the
    listener on `port`. A refused command stops the benchmark with the router's reply."""

    def __init__(
        self,
        cmd_template: str,
        port: int,
        broker_port: int,
        setup: list[str] | None = None,
        what: str = "router",
    ) -> None:
        self.what = what  # how messages name it
        self.port = port or free_port()
        self.setup = [c.format(port=self.port) for c in setup or []]
        self.tmp = tempfile.TemporaryDirectory(prefix="amqprouter-bench-")
        self.log_path = Path(self.tmp.name) / "router.log"
        self.control_socket = Path(self.tmp.name) / "control.sock"
        self.cmd = shlex.split(
            cmd_template.format(
                python=shlex.quote(sys.executable),
                bench=shlex.quote(str(Path(__file__).resolve())),
                port=self.port,
                broker_port=broker_port,
                control_socket=shlex.quote(str(self.control_socket)),
                log_directory=shlex.quote(str(Path(self.tmp.name) / "logs")),
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: Any = None

    def __enter__(self) -> Router:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if port_accepts(self.port):
            raise BenchError(f"port {self.port} is already in use; pick another --router-port")
        # Run in the temp dir so relative paths (log directory...) land there, not in the repo.
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.tmp.name, env=self.env(), stdout=log, stderr=log
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        if self.setup:
            while not unix_accepts(self.control_socket):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.what}: no control socket after 30s\n{self.log()}")
                time.sleep(0.05)
            for command in self.setup:
                self.ctl(command)
        while not port_accepts(self.port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.what} not accepting on :{self.port} after 30s\n{self.log()}"
                )
            time.sleep(0.05)
        first = self.log_path.read_text(errors="replace").strip().splitlines()[:1]
        said = first[0] if first else "(no output)"
        print(f"{self.what} pid {self.proc.pid} on :{self.port}: {said}")

    def ctl(self, command: str) -> str:
        """Run one amqprouter_ctl command; its reply, or BenchError naming the command."""
        words = shlex.split(command)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "amqprouter_ctl", str(self.control_socket), *words],
                capture_output=True,
                text=True,
                timeout=IO_TIMEOUT,
                env=self.env(),
            )
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"amqprouter_ctl {command}: no reply in {IO_TIMEOUT:.0f}s") from e
        reply = " ".join((done.stdout + done.stderr).split())  # one line, whatever it sent
        if done.returncode == 1:
            raise BenchError(f"the {self.what} refused command `{command}`: {reply}")
        if done.returncode != 0:
            self.check_alive()
            raise BenchError(f"amqprouter_ctl {command}: exit {done.returncode}: {reply}")
        return reply

    def env(self) -> dict[str, str]:
        return router_env()

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no router output)"
        return "--- router output ---\n" + text[-8000:] + "\n--- end of router output ---"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.what} exited with code {self.proc.returncode}\n{self.log()}")

    def rss(self) -> int:
        """Current (not peak) resident set size of the router and any children, in bytes."""
        procs = [self.ps, *self.ps.children(recursive=True)]
        return sum(int(p.memory_info().rss) for p in procs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                print(f"{self.what} ignored SIGTERM for 10s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(10)
        self.tmp.cleanup()


def router_env() -> dict[str, str]:
    """The checkout on the path, after PYTHONPATH (--compiled puts its build there)."""
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    return {**os.environ, "PYTHONPATH": path}


def router_version() -> str:
    """What ``amqprouter --version`` says, run as the router is: which frame scanner."""
    with tempfile.TemporaryDirectory(prefix="amqprouter-bench-") as cwd:
        done = subprocess.run(
            [sys.executable, "-m", "amqprouter", "--version"],
            cwd=cwd,  # as Router runs it: not the checkout, whose amqprouter/ would come first
            env=router_env(),
            capture_output=True,
            text=True,
            timeout=IO_TIMEOUT,
        )
    return " ".join((done.stdout + done.stderr).split())


def build_compiled(target: Path) -> None:
    """--compiled: the package with the mypyc-compiled frames module, installed in target."""
    print("building the compiled frame scanner (scripts/compiled_check.py --build-only) ...")
    script = REPO / "scripts" / "compiled_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--build-only", str(target)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise BenchError(f"the compiled build failed:\n{(done.stdout + done.stderr)[-4000:]}")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(target), os.environ.get("PYTHONPATH")])
    )


def broker_socket_limit(broker: Any) -> int | None:
    """Roughly how many client connections RabbitMQ accepts: 90% of (fd soft limit - 100).
    With the common soft limit of 1024 that is ~830, fewer than the rss workload wants."""
    with contextlib.suppress(OSError, ValueError, IndexError):  # prlimit() needs privileges
        for line in Path(f"/proc/{broker.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(0.9 * (int(soft) - 100))
    return None


def broker_process(port: int) -> Any:
    """psutil handle of the process listening on the broker port, to show the broker's CPU."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


# --- running direct / HAProxy / router in turn, and reporting ------------------------------

SIDES = ("direct", "haproxy", "router")


@dataclass(frozen=True)
class Metric:
    key: str  # sample key
    unit: str  # shown
    latency: bool = False  # lower is better: compared with HAProxy in added microseconds
    proxies_only: bool = False  # no direct figure (the proxy's own CPU per connection)


@dataclass(frozen=True)
class Target:
    """What --check asks of the router's figure in one row.

    kind "direct": router / direct; "peer": router / direct against HAProxy / direct of the
    same run (as limit x HAProxy's ratio); "peer_added": the router's added microseconds
    (router - direct) against limit x HAProxy's; "absolute": the router's figure itself."""

    kind: Literal["direct", "peer", "peer_added", "absolute"]
    op: Literal[">=", "<="]
    limit: float
    unit: str = ""  # for "absolute"

    def describe(self) -> str:
        if self.kind == "direct":
            return f"{self.op} {self.limit:g}x direct"
        if self.kind == "peer":
            return f"{self.op} {self.limit:g}x HAProxy's"
        if self.kind == "peer_added":
            return f"added {self.op} {self.limit:g}x HAProxy's"
        return f"{self.op} {self.limit:g} {self.unit}"

    def evaluate(self, d: float | None, h: float | None, r: float | None) -> bool | None:
        """True/False; None when a figure it needs is missing (e.g. no HAProxy: --peer none)."""
        if r is None:
            return None
        if self.kind == "absolute":
            value, bound = r, self.limit
        elif not d:
            return None
        elif self.kind == "direct":
            value, bound = r / d, self.limit
        elif h is None:
            return None
        elif self.kind == "peer":  # r/d >= limit * h/d, i.e. r >= limit * h
            value, bound = r, self.limit * h
        else:  # peer_added
            value, bound = r - d, self.limit * (h - d)
        return value >= bound if self.op == ">=" else value <= bound


@dataclass
class Workload:
    name: str  # --only group
    label: str
    run: Callable[[int, str, Meter], Sample]
    metrics: list[Metric]
    targets: dict[str, Target] = field(default_factory=dict)  # metric key -> target
    tls: bool = False  # run against the TLS fixtures (--tls)


@dataclass
class Result:
    label: str
    samples: dict[str, list[Sample]]  # side -> one sample per repeat
    metrics: list[Metric]
    targets: dict[str, Target]

    def median(self, side: str, key: str) -> float | None:
        vals = [s[key] for s in self.samples.get(side, []) if key in s]
        return statistics.median(vals) if vals else None


@dataclass
class Sides:
    """Where each side of a workload connects, and what is watched while it runs."""

    ports: dict[str, int]  # side -> port, in run order: direct, haproxy (with a peer), router
    procs: dict[str, Any]  # psutil handles of "broker", "haproxy", "router" (None: unknown)
    checks: list[Callable[[], None]]  # each raises if its proxy died: the better explanation


def run_interleaved(w: Workload, args: argparse.Namespace, sides: Sides) -> Result:
    """direct, haproxy, router, direct, haproxy, router...: all sides see the same drift."""
    res = Result(w.label, {side: [] for side in sides.ports}, w.metrics, w.targets)
    for i in range(args.repeat):
        wait_quiet(args.wait_quiet)
        for side, port in sides.ports.items():
            watched = {"broker": sides.procs.get("broker")}
            if side != "direct":
                watched[side] = sides.procs.get(side)
            meter = Meter({k: p for k, p in watched.items() if p is not None})
            meter.proxy = side if side in meter.procs else None
            label = f"{w.label} {side} #{i + 1} (:{port})"
            try:
                sample = w.run(port, label, meter)
            except BenchError:
                for check in sides.checks:
                    check()
                raise
            res.samples[side].append(sample)
            shown = "  ".join(
                f"{sample[m.key]:,.1f} {m.unit}" for m in w.metrics if m.key in sample
            )
            cpu = "  ".join(f"{k[:-4]} {v:.0f}%" for k, v in sample.items() if k.endswith("_cpu"))
            print(f"  {label:<44} {shown}   CPU: {cpu}", flush=True)
    return res


CPU_COLUMNS = [  # (side, sample key, heading) of the CPU table
    ("direct", "gen_cpu", "gen dir"),
    ("haproxy", "gen_cpu", "gen hap"),
    ("router", "gen_cpu", "gen rtr"),
    ("haproxy", "haproxy_cpu", "haproxy"),
    ("router", "router_cpu", "router"),
    ("direct", "broker_cpu", "brk dir"),
    ("haproxy", "broker_cpu", "brk hap"),
    ("router", "broker_cpu", "brk rtr"),
    ("direct", "other_cpu", "oth dir"),
    ("haproxy", "other_cpu", "oth hap"),
    ("router", "other_cpu", "oth rtr"),
]


def fmt_num(x: float | None, spec: str = ",.1f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table_row(r: Result, m: Metric) -> dict[str, Any]:
    """One metric of one workload: the three medians, the ratios and the target's verdict."""
    d, h, v = (r.median(side, m.key) for side in SIDES)
    row: dict[str, Any] = {"workload": r.label, "metric": m.unit, "direct": d, "haproxy": h}
    row |= {"router": v, "haproxy_ratio": ratio(h, d), "router_ratio": ratio(v, d)}
    if m.latency and not m.proxies_only:
        # Latency against HAProxy: what each proxy adds to the direct round trip.
        added = {
            k: (x - d if x is not None and d is not None else None) for k, x in (("h", h), ("r", v))
        }
        row["haproxy_added_us"], row["router_added_us"] = added["h"], added["r"]
        row["router_vs_haproxy"] = ratio(added["r"], added["h"])
    else:
        row["router_vs_haproxy"] = ratio(v, h)
    row["target"] = row["result"] = ""
    if target := r.targets.get(m.key):
        row["target"] = target.describe()
        ok = target.evaluate(d, h, v)
        row["result"] = "n/a" if ok is None else "PASS" if ok else "FAIL"
    return row


def vs_haproxy_cell(row: dict[str, Any]) -> str:
    if "router_added_us" in row:
        r, h = row["router_added_us"], row["haproxy_added_us"]
        return "-" if r is None or h is None else f"{r:+.0f} vs {h:+.0f}"
    return fmt_num(row["router_vs_haproxy"], ".2f") + ("x" if row["router_vs_haproxy"] else "")


def report(results: list[Result]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Print the three-way table; return failed targets, targets not evaluated, JSON rows."""
    line = (
        "{workload:<24} {metric:<12} {direct:>11} {haproxy:>11} {router:>11} {hap:>6} {rtr:>6}"
        " {vs:>13}  {target:<23} {result}"
    )
    heads = {"workload": "workload", "metric": "metric", "direct": "direct"}
    heads |= {"haproxy": "haproxy", "router": "router", "hap": "hap/d", "rtr": "rtr/d"}
    heads |= {"vs": "rtr vs hap", "target": "target (router)", "result": "result"}
    print("\n" + line.format(**heads))
    failures: list[str] = []
    unevaluated: list[str] = []
    rows: list[dict[str, Any]] = []
    for r in results:
        for m in r.metrics:
            row = table_row(r, m)
            rows.append(row)
            if row["result"] == "FAIL":
                failures.append(f"{r.label} {m.unit}")
            elif row["result"] == "n/a":
                unevaluated.append(f"{r.label} {m.unit}")
            cells: dict[str, str] = {k: fmt_num(row[k]) for k in ("direct", "haproxy", "router")}
            cells |= {"hap": fmt_num(row["haproxy_ratio"], ".2f")}
            cells |= {"rtr": fmt_num(row["router_ratio"], ".2f"), "vs": vs_haproxy_cell(row)}
            print(line.format(**{**row, **cells}))
    cpu_rows = [(r.label, [r.median(side, k) for side, k, _ in CPU_COLUMNS]) for r in results]
    cpu_rows = [(label, cpu) for label, cpu in cpu_rows if any(c is not None for c in cpu)]
    if cpu_rows:
        print("\nCPU, % of one core (median); gen = this load generator, brk = the broker")
        print(f"{'workload':<24}" + "".join(f"{h:>9}" for _, _, h in CPU_COLUMNS))
        for label, cpu in cpu_rows:
            print(f"{label:<24}" + "".join(f"{'-' if c is None else f'{c:.0f}%':>9}" for c in cpu))
    others = [
        s["other_cpu"] for r in results for v in r.samples.values() for s in v if "other_cpu" in s
    ]
    if others and max(others) > 30:
        print(
            f"\nWARNING: other processes used up to {max(others):.0f}% CPU during some runs"
            " (the 'oth' columns): figures from those runs are unreliable; rerun when quiet."
        )
    return failures, unevaluated, rows


RATE = [Metric("msg_s", "msg/s"), Metric("mb_s", "MB/s")]
LATENCY = [Metric("p50_us", "p50 us", latency=True), Metric("p99_us", "p99 us", latency=True)]
CONNS = [
    Metric("conn_s", "conn/s"),
    Metric("proxy_us_conn", "CPU us/conn", latency=True, proxies_only=True),
]
# Issue 13's targets: set by HAProxy's figures of the same run where a proxy's cost shows.
PUBLISH_TARGETS = {
    1024: {"msg_s": Target("peer", ">=", 1.0)},
    65536: {"mb_s": Target("peer", ">=", 1.0)},
}
RSS_TARGET = Target("absolute", "<=", 16, "KiB")
#: Issue 24's target: a pooled router serves PHP-style clients 4x faster than direct.
POOLED_TARGET = {"conn_s": Target("direct", ">=", 4.0)}
STORM = [
    Metric("storm_s", "seconds"),  # until every client was served: lower is better
    Metric("p50_us", "open p50 us", latency=True),
    Metric("p99_us", "open p99 us", latency=True),
    Metric("proxy_us_conn", "CPU us/conn", latency=True, proxies_only=True),
]


def workloads(quick: bool, tls: ssl.SSLContext | None) -> list[Workload]:
    """The workloads in run order; with a TLS client context, the TLS ones after the others."""
    q = 10 if quick else 1  # --quick divides counts, keeps the shape of every workload
    # Counts give ~2-4 s per direct publish run on a 2-core box (~350k, 200k, 35k msg/s).
    pub = [("16 B", 16, 1_000_000), ("1 KiB", 1024, 600_000), ("64 KiB", 65536, 100_000)]
    found = [
        *(
            Workload(
                "publish",
                f"publish {name}",
                functools.partial(bench_publish, size=size, count=n // q),
                RATE,
                PUBLISH_TARGETS.get(size, {}),
            )
            for name, size, n in pub
        ),
        Workload(
            "confirm",
            "confirm 1 KiB",
            functools.partial(bench_confirm, count=2000 // q),
            LATENCY,
            {"p50_us": Target("peer_added", "<=", 1.2)},
        ),
        Workload(
            "confirm",
            "ping-pong (Qos)",
            functools.partial(bench_ping_pong, count=2000 // q),
            LATENCY,
        ),
        Workload(
            "handshake",
            "handshake sequential",
            functools.partial(bench_handshake, workers=1, each=1000 // q),
            CONNS,
            {"conn_s": Target("peer", ">=", 1.0)},
        ),
        Workload(
            "handshake",
            "handshake 32 parallel",
            functools.partial(bench_handshake, workers=32, each=40 // q),
            CONNS,
            {
                "conn_s": Target("direct", ">=", 0.65),
                "proxy_us_conn": Target("absolute", "<=", 500, "us"),
            },
        ),
    ]
    if tls is None:
        return found
    # Issue 11's TLS targets, against the TLS node direct (HAProxy here only passes TLS through).
    return [
        *found,
        Workload(
            "publish",
            "tls publish 1 KiB",
            functools.partial(bench_publish, size=1024, count=200_000 // q, tls=tls),
            RATE,
            {"msg_s": Target("direct", ">=", 0.8)},
            tls=True,
        ),
        Workload(
            "confirm",
            "tls confirm 1 KiB",
            functools.partial(bench_confirm, count=2000 // q, tls=tls),
            LATENCY,
            {"p50_us": Target("direct", "<=", 1.8)},
            tls=True,
        ),
        Workload(
            "handshake",
            "tls handshake sequential",
            functools.partial(bench_handshake, workers=1, each=500 // q, tls=tls),
            CONNS,
            tls=True,
        ),
    ]


# --- the throwaway relay (hidden --relay): a stand-in router and a yardstick ---------------


async def relay_main(listen_port: int, dest_port: int) -> None:
    async def pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await src.receive_some(1 << 16):
                await dst.send_all(data)
        done.cancel()  # one side finished: tear down both directions

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(HOST, dest_port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(pump, upstream, client, nursery.cancel_scope)

    print(f"Starting amqprouter stand-in: trio relay :{listen_port} -> :{dest_port}", flush=True)
    await trio.serve_tcp(handle, listen_port, host="0.0.0.0")


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke test (~2 min)")
    ap.add_argument(
        "--only",
        default="",
        help="comma list of: publish, confirm, handshake, rss, storm, distance, priming, null,\n"
        "pooling",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="direct/haproxy/router rounds per workload"
    )
    ap.add_argument("--json", type=Path, help="write results to this file")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a target fails or cannot be evaluated (e.g. --peer none)",
    )
    ap.add_argument(
        "--peer",
        choices=("auto", "haproxy", "none"),
        default="auto",
        help="the proxy every workload is also run through (default auto: haproxy if\n"
        "installed; scripts/bench-setup installs it)",
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="add TLS workloads: a private RabbitMQ node with a TLS listener, direct and\n"
        "through the router with TLS in and out",
    )
    ap.add_argument("--broker-port", type=int, default=5672)
    ap.add_argument("--router-port", type=int, default=0, help="default: a free port")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each round, wait up to SECONDS for the machine to be idle",
    )
    ap.add_argument("--rss-sessions", type=int, default=0, help="default 1000 (200 --quick)")
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="run the router with the mypyc-compiled frame scanner (built first, ~20 s;\n"
        "AMQPROUTER_COMPILE=1 at install gives it to users); default: the checkout's\n"
        "pure-Python module",
    )
    # Hidden: the command starting the router ("relay" = the stand-in below), and the relay.
    ap.add_argument("--router-cmd", default=DEFAULT_ROUTER_CMD, help=argparse.SUPPRESS)
    ap.add_argument("--relay", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument(
        "--forwarding",
        choices=("engine", "tasks"),
        help="the router's data plane (--forwarding, given as AMQPROUTER_FORWARDING);\n"
        "default: the router's own default",
    )
    # Hidden: "relay" puts the trio relay in the TLS router's place (it passes TLS through, as
    # HAProxy does): checks the TLS node, certificates and client without the router's TLS.
    ap.add_argument("--tls-router-cmd", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()} or set(NAMES)
    if unknown := args.only - set(NAMES):
        ap.error(f"unknown workload(s) in --only: {', '.join(sorted(unknown))}")
    if args.router_cmd == "relay":
        args.router_cmd = RELAY_CMD
    if args.forwarding:
        # The router processes inherit it (router_env copies this environment).
        os.environ["AMQPROUTER_FORWARDING"] = args.forwarding
    return args


def raise_fd_limit(wanted: int) -> None:
    """The rss workload holds 1,000 sockets here and 2,000 in the router (which inherits this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def run_rss(args: argparse.Namespace, broker: Any) -> Result:
    count = args.rss_sessions or (200 if args.quick else 1000)
    limit = broker_socket_limit(broker) if broker is not None else None
    if limit is not None and count > limit - 40:
        # Each session through the router is also a broker connection; past its limit RabbitMQ
        # leaves new ones hanging. Leave headroom for other clients of the broker.
        count = (limit - 40) // 50 * 50
        print(f"note: the broker accepts only ~{limit} connections (fd limit): using {count}")
    # Router only: HAProxy holds a session in a few KiB of fixed buffers and C structures, a
    # figure that says nothing about what our Python session costs; see docs/benchmark.md.
    print(f"rss: {count} idle connections, a fresh router each repeat (router only):", flush=True)
    key = "kib_per_session"
    metrics = [Metric(key, "KiB/session")]
    res = Result("rss idle session", {"router": []}, metrics, {key: RSS_TARGET})
    for i in range(args.repeat):
        wait_quiet(args.wait_quiet)
        with Router(args.router_cmd, args.router_port, args.broker_port) as router:
            s = bench_rss(router, count)
        res.samples["router"].append(s)
        mib = f"{s['rss_before_mib']:.1f} -> {s['rss_after_mib']:.1f} MiB"
        print(f"  rss #{i + 1}: {mib}, {s[key]:.1f} KiB/session", flush=True)
    return res


def choose_peer(args: argparse.Namespace) -> str | None:
    """The haproxy binary to run as the peer, or None (--peer none, or auto and not found)."""
    if args.peer == "none":
        print("peer: none (--peer none): router against direct only")
        return None
    binary = find_haproxy()
    if binary is None:
        if args.peer == "haproxy":
            raise BenchError("--peer haproxy: haproxy is not installed; run scripts/bench-setup")
        print("peer: none (haproxy not found; scripts/bench-setup installs it)")
        return None
    print(f"peer: {haproxy_version(binary)} in TCP mode ({binary})")
    return binary


TLS_ROUTER_CMD = (
    "{python} -m amqprouter --control-socket {control_socket} --log-directory {log_directory}"
)


def tls_router_setup(files: TlsFiles, backend_port: int) -> list[str]:
    """amqprouter_ctl commands for TLS in (START_SECURE) and out (a TLS backend, verified)."""
    q = shlex.quote
    return [
        f"TLS INGRESS CERT_CHAIN_FILE {q(str(files.chain))}",
        f"TLS INGRESS KEY_FILE {q(str(files.key))}",
        f"TLS EGRESS CA_CERT_FILE {q(str(files.ca))}",
        "TLS EGRESS VERIFY_MODE PEER",
        f"BACKEND ADD tlsnode bench {HOST} {backend_port} TLS",
        "FARM ADD tlsfarm round-robin tlsnode",
        "MAP DEFAULT tlsfarm",
        "LISTEN START_SECURE {port}",  # the router's port, filled in by Router
    ]


def run(args: argparse.Namespace) -> int:
    raise_fd_limit(8192)
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"amqprouter benchmark {when}, {os.cpu_count()} CPUs, broker :{args.broker_port},")
    print(f"repeat {args.repeat}, router: {args.router_cmd}")
    if not port_accepts(args.broker_port):
        raise BenchError(f"no broker accepting on {HOST}:{args.broker_port}")
    haproxy_bin = choose_peer(args)
    broker = broker_process(args.broker_port)
    results: list[Result] = []
    # Lives until the rss workload's routers are done (its finalizer removes it on errors).
    build = tempfile.TemporaryDirectory(prefix="amqprouter-bench-") if args.compiled else None
    if build is not None:
        build_compiled(Path(build.name) / "site")
    args.router_version = router_version()
    print(f"router: {args.router_version}")
    with contextlib.ExitStack() as stack:
        tls_ctx, files = None, None
        if args.tls:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="amqprouter-tls-")))
            files = make_certs(tmp)
            tls_ctx = client_context(files)
        everything = workloads(args.quick, tls_ctx) + storm_workloads(args.quick)
        selected = [w for w in everything if w.name in args.only]
        plain = [w for w in selected if not w.tls]
        secure = [w for w in selected if w.tls]
        routes = [Route("amqp", free_port(), args.broker_port)] if plain else []
        tls_router, tls_port = None, 0
        if secure and files is not None:
            node, tls_port = stack.enter_context(tls_node(files))
            # The router first: a refused command stops the run before the node's slow boot.
            if args.tls_router_cmd == "relay":
                tls_router = Router(RELAY_CMD, 0, tls_port, what="TLS passthrough relay")
            else:
                setup = tls_router_setup(files, tls_port)
                tls_router = Router(TLS_ROUTER_CMD, 0, tls_port, setup=setup, what="TLS router")
            stack.enter_context(tls_router)
            start_tls_node(node, tls_port)
            routes.append(Route("amqps", free_port(), tls_port))
        hap = stack.enter_context(HAProxy(haproxy_bin, routes)) if haproxy_bin and routes else None
        if plain:
            router = stack.enter_context(
                Router(args.router_cmd, args.router_port, args.broker_port)
            )
            sides = make_sides(args.broker_port, broker, "amqp", hap, router)
            for w in plain:
                print(f"{w.label}:", flush=True)
                results.append(run_interleaved(w, args, sides))
        if tls_router is not None:
            node_broker = broker_process(tls_port)
            sides = make_sides(tls_port, node_broker, "amqps", hap, tls_router)
            for side, port in sides.ports.items():
                assert tls_ctx is not None
                said = tls_session_info(port, f"tls {side} (:{port})", tls_ctx)
                print(f"tls {side} (:{port}): {said}")
            if hap is not None:
                print(
                    "(tls: HAProxy passes the TLS session through to the node; the router"
                    " terminates it and opens its own to the node)"
                )
            for w in secure:
                print(f"{w.label}:", flush=True)
                results.append(run_interleaved(w, args, sides))
    if "priming" in args.only:
        results += run_loopback_priming(args, broker, haproxy_bin)
    if "pooling" in args.only:
        results += run_pooling(args, broker)
    if "distance" in args.only:
        results += run_distance(args, broker, haproxy_bin)
    if "null" in args.only:
        results += run_null(args, haproxy_bin)
    if "rss" in args.only:
        results.append(run_rss(args, broker))
    if build is not None:
        build.cleanup()
    failures, unevaluated, rows = report(results)
    if args.json:
        machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
        out: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
        out["machine"] = machine
        out |= {"router_cmd": args.router_cmd, "quick": args.quick, "repeat": args.repeat}
        out["router_version"] = args.router_version
        out |= {"peer": haproxy_version(haproxy_bin) if haproxy_bin else None, "tls": args.tls}
        out["samples"] = {r.label: r.samples for r in results}
        args.json.write_text(json.dumps(out, indent=2))
    if failures:
        print("\nFAILED targets: " + "; ".join(failures))
    if unevaluated:
        print(
            "\nTargets not evaluated (a figure is missing; --peer none?): " + "; ".join(unevaluated)
        )
    return 1 if args.check and (failures or unevaluated) else 0


def run_null(args: argparse.Namespace, haproxy_bin: str | None) -> list[Result]:
    """--only null: publishes into a broker that drops them (benchmarks/null_broker.py), so
    that the proxy, not RabbitMQ's parsing, is what limits the rate: direct, HAProxy and
    the router, in turns, as for every workload. The router's target: the pure build at
    least HAProxy's rate; with --compiled, 1.5 M msg/s of 1 KiB."""
    port = free_port()
    script = Path(__file__).resolve().parent / "null_broker.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        deadline = time.monotonic() + 10
        while not port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the null broker did not start on :{port}")
            time.sleep(0.05)
        broker = psutil.Process(proc.pid)
        q = 10 if args.quick else 1
        target = (
            Target("absolute", ">=", 1_500_000, "msg/s")
            if args.compiled
            else Target("peer", ">=", 1.0)
        )
        null_workloads = [
            Workload(
                "null",
                f"null publish {name}",
                functools.partial(bench_publish, size=size, count=count // q),
                RATE,
                {"msg_s": target} if size == 1024 else {},
            )
            for name, size, count in (("1 KiB", 1024, 3_000_000), ("16 B", 16, 6_000_000))
        ]
        with contextlib.ExitStack() as stack:
            routes = [Route("amqp", free_port(), port)]
            hap = stack.enter_context(HAProxy(haproxy_bin, routes)) if haproxy_bin else None
            router = stack.enter_context(Router(args.router_cmd, 0, port))
            sides = make_sides(port, broker, "amqp", hap, router)
            results = []
            for w in null_workloads:
                print(f"{w.label}:", flush=True)
                results.append(run_interleaved(w, args, sides))
            return results
    finally:
        proc.kill()
        proc.wait()


def make_sides(
    direct_port: int, broker: Any, route: str, hap: HAProxy | None, router: Router
) -> Sides:
    ports = {"direct": direct_port}
    procs: dict[str, Any] = {"broker": broker, "router": router.ps}
    checks = [router.check_alive]
    if hap is not None:
        ports["haproxy"] = hap.port(route)
        procs["haproxy"] = hap.ps
        checks.append(hap.check_alive)
    ports["router"] = router.port
    return Sides(ports, procs, checks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.relay:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(relay_main, *args.relay)
        return 0
    # SIGTERM -> SystemExit, so the finally blocks stop the router and HAProxy.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except (BenchError, PeerError, TlsSetupError) as e:
        print(f"\nbenchmark error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the router and HAProxy were stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
