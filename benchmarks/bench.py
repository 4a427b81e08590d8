#!/usr/bin/env python3
"""amqprouter benchmark: every workload direct to RabbitMQ and through the router, side by side.

Run from the repository root (RabbitMQ on 127.0.0.1:5672, guest/guest):

    .venv/bin/python benchmarks/bench.py [--quick] [--only publish,confirm,handshake,rss]
                                         [--repeat N] [--json FILE] [--check]

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
from typing import Any

import psutil
import trio
from pamqp import base, body, frame, header
from pamqp.commands import Basic, Channel, Confirm, Connection

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
NAMES = ("publish", "confirm", "handshake", "rss")


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

    def __init__(self, port: int, label: str) -> None:
        self.label = label
        self.frame_max = FRAME_MAX
        self.buf = bytearray()
        self.opened = False
        try:
            self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        except OSError as e:
            raise BenchError(f"{label}: cannot connect to {HOST}:{port}: {e}") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
        while select.select([self.sock], [], [], 0)[0]:
            self._recv()
            while self._pop_frame() is not None:
                pass

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
    wall: float = 0.0
    cpu: Sample = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before = {name: proc_cpu(p) for name, p in self.procs.items()}
        busy0, gen0, t0 = busy_cpu(), time.process_time(), time.perf_counter()
        yield
        self.wall = time.perf_counter() - t0
        self.cpu["gen_cpu"] = 100 * (time.process_time() - gen0) / self.wall
        for name, p in self.procs.items():
            self.cpu[f"{name}_cpu"] = 100 * (proc_cpu(p) - before[name]) / self.wall
        # Whatever else kept the machine busy meanwhile: the noise to keep in mind.
        busy = 100 * (busy_cpu() - busy0) / self.wall
        self.cpu["other_cpu"] = max(0.0, busy - sum(self.cpu.values()))


def busy_cpu() -> float:
    """Non-idle CPU seconds of the whole machine, all cores (steal counts: it is noise too)."""
    t = psutil.cpu_times()._asdict()
    idle = ("idle", "iowait", "guest", "guest_nice")  # guest time is already in user
    return float(sum(v for k, v in t.items() if k not in idle))


def wait_quiet(max_wait: float) -> None:
    """--wait-quiet: before a direct/router pair, wait (bounded) for the machine to be idle, so
    a burst of unrelated load is less likely to land on one side of the pair only."""
    deadline = time.monotonic() + max_wait
    while max_wait > 0 and (busy := psutil.cpu_percent(1.0) * (os.cpu_count() or 1)) > 25:
        if time.monotonic() > deadline:
            print(f"  (machine still busy after {max_wait:g}s: {busy:.0f}% CPU; going on)")
            return


# --- workloads: each takes a port and returns one sample -----------------------------------


@contextlib.contextmanager
def amqp_session(port: int, label: str, channel: bool = True) -> Iterator[AmqpClient]:
    """An open connection (and channel 1): closed with Close/CloseOk after success, dropped
    after an error (waiting for a CloseOk then could only hide the first error)."""
    c = AmqpClient(port, label)
    try:
        c.handshake()
        if channel:
            c.open_channel()
        yield c
        c.close()
    finally:
        c.sock.close()


def bench_publish(port: int, label: str, meter: Meter, size: int, count: int) -> Sample:
    with amqp_session(port, label) as c:
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


def bench_confirm(port: int, label: str, meter: Meter, count: int) -> Sample:
    with amqp_session(port, label) as c:
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


def one_handshake(port: int, label: str) -> None:
    """Full open (header, StartOk, TuneOk+Open, OpenOk), Close/CloseOk, socket closed."""
    with amqp_session(port, label, channel=False):
        pass


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


def bench_handshake(port: int, label: str, meter: Meter, workers: int, each: int) -> Sample:
    def worker(_i: int) -> None:
        for _ in range(each):
            one_handshake(port, label)

    with meter.measure():
        in_threads(workers, worker)  # workers=1 is the sequential case
    return {"conn_s": workers * each / meter.wall, **meter.cpu}


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


class Router:
    """The router under test as a subprocess: started ready, always stopped, output kept."""

    def __init__(self, cmd_template: str, port: int, broker_port: int) -> None:
        self.port = port or free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="amqprouter-bench-")
        self.log_path = Path(self.tmp.name) / "router.log"
        self.cmd = shlex.split(
            cmd_template.format(
                python=shlex.quote(sys.executable),
                bench=shlex.quote(str(Path(__file__).resolve())),
                port=self.port,
                broker_port=broker_port,
                control_socket=shlex.quote(str(Path(self.tmp.name) / "control.sock")),
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
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.tmp.name, env=env, stdout=log, stderr=log
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while not port_accepts(self.port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"router not accepting on :{self.port} after 30s\n{self.log()}")
            time.sleep(0.05)
        first = self.log_path.read_text(errors="replace").strip().splitlines()[:1]
        print(f"router pid {self.proc.pid} on :{self.port}: {first[0] if first else '(no output)'}")

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no router output)"
        return "--- router output ---\n" + text[-8000:] + "\n--- end of router output ---"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"router exited with code {self.proc.returncode}\n{self.log()}")

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
                print("router ignored SIGTERM for 10s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(10)
        self.tmp.cleanup()


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


# --- running direct/router pairs and reporting ---------------------------------------------


@dataclass
class Workload:
    name: str  # --only group
    label: str
    run: Callable[[int, str, Meter], Sample]
    metrics: list[tuple[str, str]]  # (sample key, unit shown)
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (op, ratio)


@dataclass
class Result:
    label: str
    samples: dict[str, list[Sample]]  # "direct"/"router" -> one sample per repeat
    metrics: list[tuple[str, str]]
    targets: dict[str, tuple[str, float]]

    def median(self, side: str, key: str) -> float | None:
        vals = [s[key] for s in self.samples.get(side, []) if key in s]
        return statistics.median(vals) if vals else None


def run_pairs(w: Workload, args: argparse.Namespace, router: Router, broker: Any) -> Result:
    """direct, router, direct, router...: interleaved so both sides see the same noise."""
    res = Result(w.label, {"direct": [], "router": []}, w.metrics, w.targets)
    ports = {"direct": args.broker_port, "router": router.port}
    procs = {"router": router.ps, "broker": broker}
    for i in range(args.repeat):
        wait_quiet(args.wait_quiet)
        for side in ("direct", "router"):
            watched = {k: p for k, p in procs.items() if p is not None}
            if side == "direct":
                watched.pop("router", None)
            label = f"{w.label} {side} #{i + 1} (:{ports[side]})"
            try:
                sample = w.run(ports[side], label, Meter(watched))
            except BenchError:
                router.check_alive()  # a dead router is the better explanation
                raise
            res.samples[side].append(sample)
            shown = "  ".join(f"{sample[k]:,.1f} {unit}" for k, unit in w.metrics)
            cpu = "  ".join(f"{k[:-4]} {v:.0f}%" for k, v in sample.items() if k.endswith("_cpu"))
            print(f"  {label:<40} {shown}   CPU: {cpu}", flush=True)
    return res


CPU_COLUMNS = [  # (side, sample key, heading) of the CPU table
    ("direct", "gen_cpu", "gen dir"),
    ("router", "gen_cpu", "gen rtr"),
    ("router", "router_cpu", "router"),
    ("direct", "broker_cpu", "broker dir"),
    ("router", "broker_cpu", "broker rtr"),
    ("direct", "other_cpu", "other dir"),
    ("router", "other_cpu", "other rtr"),
]


def fmt_num(x: float | None, spec: str = ",.1f") -> str:
    return "-" if x is None else format(x, spec)


def report(results: list[Result]) -> tuple[list[str], list[dict[str, Any]]]:
    """Print the side-by-side table; return failed targets and JSON-ready rows."""
    line = "{workload:<22} {metric:<12} {direct:>12} {router:>12} {ratio:>7}  {target:<16} {result}"
    heads = ("workload", "metric", "direct", "router", "ratio", "target", "result")
    print("\n" + line.format(**{h: h for h in heads}))
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    for r in results:
        for key, unit in r.metrics:
            d, v = r.median("direct", key), r.median("router", key)
            row: dict[str, Any] = {"workload": r.label, "metric": unit, "direct": d, "router": v}
            row["ratio"] = v / d if d and v is not None else None
            row["target"] = row["result"] = ""
            if key in r.targets:
                op, limit = r.targets[key]
                absolute = key == "kib_per_session"  # the one absolute target
                row["target"] = f"{op} {limit:g} {'KiB' if absolute else 'x direct'}"
                value = v if absolute else row["ratio"]
                ok = value is not None and (value >= limit if op == ">=" else value <= limit)
                row["result"] = "PASS" if ok else "FAIL"
                if not ok:
                    failures.append(f"{r.label} {unit}")
            rows.append(row)
            shown = {k: fmt_num(row[k]) for k in ("direct", "router")}
            print(line.format(**{**row, **shown, "ratio": fmt_num(row["ratio"], ".2f")}))
    cpu_rows = [(r.label, [r.median(side, k) for side, k, _ in CPU_COLUMNS]) for r in results]
    cpu_rows = [(label, cells) for label, cells in cpu_rows if any(c is not None for c in cells)]
    if cpu_rows:
        print("\nCPU, % of one core (median); gen = this load generator")
        print(f"{'workload':<22}" + "".join(f"{h:>11}" for _, _, h in CPU_COLUMNS))
        for label, cells in cpu_rows:
            print(f"{label:<22}" + "".join(f"{fmt_num(c, '.0f') + '%':>11}" for c in cells))
    others = [
        s["other_cpu"] for r in results for v in r.samples.values() for s in v if "other_cpu" in s
    ]
    if others and max(others) > 30:
        print(
            f"\nWARNING: other processes used up to {max(others):.0f}% CPU during some runs"
            " (the 'other' columns): figures from those runs are unreliable; rerun when quiet."
        )
    return failures, rows


def workloads(quick: bool) -> list[Workload]:
    q = 10 if quick else 1  # --quick divides counts, keeps the shape of every workload
    # Counts give ~2-4 s per direct publish run on a 2-core box (~350k, 200k, 35k msg/s).
    pub = [("16 B", 16, 1_000_000), ("1 KiB", 1024, 600_000), ("64 KiB", 65536, 100_000)]
    rate = [("msg_s", "msg/s"), ("mb_s", "MB/s")]
    conns = [("conn_s", "conn/s")]
    return [
        *(
            Workload(
                "publish",
                f"publish {name}",
                functools.partial(bench_publish, size=size, count=n // q),
                rate,
                {"msg_s": (">=", 0.9)} if size == 1024 else {},
            )
            for name, size, n in pub
        ),
        Workload(
            "confirm",
            "confirm 1 KiB",
            functools.partial(bench_confirm, count=2000 // q),
            [("p50_us", "p50 us"), ("p99_us", "p99 us")],
            {"p50_us": ("<=", 1.5)},
        ),
        Workload(
            "handshake",
            "handshake sequential",
            functools.partial(bench_handshake, workers=1, each=1000 // q),
            conns,
            {"conn_s": (">=", 0.85)},
        ),
        Workload(
            "handshake",
            "handshake 32 parallel",
            functools.partial(bench_handshake, workers=32, each=40 // q),
            conns,
            {"conn_s": (">=", 0.85)},
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
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke test (< 60 s)")
    ap.add_argument("--only", default="", help="comma list of: publish, confirm, handshake, rss")
    ap.add_argument("--repeat", type=int, default=3, help="direct/router pairs per workload")
    ap.add_argument("--json", type=Path, help="write results to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    ap.add_argument("--broker-port", type=int, default=5672)
    ap.add_argument("--router-port", type=int, default=0, help="default: a free port")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each direct/router pair, wait up to SECONDS for the machine to be idle",
    )
    ap.add_argument("--rss-sessions", type=int, default=0, help="default 1000 (200 --quick)")
    # Hidden: the command starting the router ("relay" = the stand-in below), and the relay.
    ap.add_argument("--router-cmd", default=DEFAULT_ROUTER_CMD, help=argparse.SUPPRESS)
    ap.add_argument("--relay", type=int, nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()} or set(NAMES)
    if unknown := args.only - set(NAMES):
        ap.error(f"unknown workload(s) in --only: {', '.join(sorted(unknown))}")
    if args.router_cmd == "relay":
        args.router_cmd = RELAY_CMD
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
    print(f"rss: {count} idle connections, a fresh router each repeat:", flush=True)
    key = "kib_per_session"
    res = Result("rss idle session", {"router": []}, [(key, "KiB/session")], {key: ("<=", 16)})
    for i in range(args.repeat):
        wait_quiet(args.wait_quiet)
        with Router(args.router_cmd, args.router_port, args.broker_port) as router:
            s = bench_rss(router, count)
        res.samples["router"].append(s)
        mib = f"{s['rss_before_mib']:.1f} -> {s['rss_after_mib']:.1f} MiB"
        print(f"  rss #{i + 1}: {mib}, {s[key]:.1f} KiB/session", flush=True)
    return res


def run(args: argparse.Namespace) -> int:
    raise_fd_limit(8192)
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"amqprouter benchmark {when}, {os.cpu_count()} CPUs, broker :{args.broker_port},")
    print(f"repeat {args.repeat}, router: {args.router_cmd}")
    if not port_accepts(args.broker_port):
        raise BenchError(f"no broker accepting on {HOST}:{args.broker_port}")
    broker = broker_process(args.broker_port)
    results: list[Result] = []
    if selected := [w for w in workloads(args.quick) if w.name in args.only]:
        with Router(args.router_cmd, args.router_port, args.broker_port) as router:
            for w in selected:
                print(f"{w.label}:", flush=True)
                results.append(run_pairs(w, args, router, broker))
    if "rss" in args.only:
        results.append(run_rss(args, broker))
    failures, rows = report(results)
    if args.json:
        machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
        out = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine, "rows": rows}
        out |= {"router_cmd": args.router_cmd, "quick": args.quick, "repeat": args.repeat}
        out["samples"] = {r.label: r.samples for r in results}
        args.json.write_text(json.dumps(out, indent=2))
    if failures:
        print("\nFAILED targets: " + "; ".join(failures))
    return 1 if args.check and failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.relay:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(relay_main, *args.relay)
        return 0
    # SIGTERM -> SystemExit, so the finally blocks stop the router.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except BenchError as e:
        print(f"\nbenchmark error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the router was stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
