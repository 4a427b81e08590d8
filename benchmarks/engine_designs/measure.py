"""Measure the forwarding designs of relay.py against direct and HAProxy in one run.

    python benchmarks/engine_designs/measure.py [--repeat N] [--designs a,b] [--skip ...]

Three measurements (docs/benchmark.md, "Forwarding engine: two designs measured"):

* **latency**: confirm 1 KiB p50/p99 (bench.py's workload), direct, HAProxy and each
  design in turns per round; idle, then again while a separate process runs a handshake
  storm (32 threads, each opening and closing AMQP connections in a loop) through the
  same side, so the proxy's trio thread is busy while the round trips cross it.
* **instructions**: each design under callgrind, user-space instructions per confirmed
  round trip (as benchmarks/instructions.py counts them).
* **busy**: 500 sessions through the proxy, each with one confirmed publish in flight
  all the time (one selector loop in this process); the proxy's CPU per round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench import (  # noqa: E402
    FRAME_HDR,
    AmqpClient,
    Meter,
    bench_confirm,
    bench_ping_pong,
    encode,
    encode_publish,
    free_port,
    in_threads,
    one_handshake,
    port_accepts,
    proc_cpu,
)
from haproxy_peer import Route, find_haproxy, render_config  # noqa: E402
from instructions import control, dumped, under_callgrind, wait_listening  # noqa: E402
from pamqp.commands import Basic, Confirm  # noqa: E402

BROKER = 5672


@contextlib.contextmanager
def started(command: list[str], port: int) -> Iterator[Any]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"{command} did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.05)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def router_command(name: str, port: int, work: Path) -> list[str]:
    """``router:engine`` / ``router:tasks``: the router itself, in simple mode, with that
    ``--forwarding`` (and its defaults otherwise, as bench.py runs it)."""
    forwarding = name.partition(":")[2]
    home = work / f"router-{port}"
    home.mkdir()
    return [
        sys.executable,
        "-m",
        "amqprouter",
        "--listen-port",
        str(port),
        "--destination-dns",
        "127.0.0.1",
        "--destination-port",
        str(BROKER),
        "--forwarding",
        forwarding,
        "--control-socket",
        str(home / "control.sock"),
        "--log-directory",
        str(home / "logs"),
    ]


def relay_command(name: str, port: int, args: argparse.Namespace) -> list[str]:
    """``thread@0.0005``: the design with that ``sys.setswitchinterval``."""
    design, _, interval = name.partition("@")
    command = [sys.executable, str(HERE / "relay.py"), design, str(port), str(BROKER)]
    command += ["--handshake-work", str(args.handshake_work)]
    if interval:
        command += ["--switch-interval", interval]
    return command


@contextlib.contextmanager
def side(name: str, args: argparse.Namespace, work: Path) -> Iterator[tuple[int, Any]]:
    if name == "direct":
        yield BROKER, None
        return
    port = free_port()
    if name == "haproxy":
        haproxy = find_haproxy()
        assert haproxy is not None, "haproxy not installed (scripts/bench-setup)"
        config = work / f"haproxy-{port}.cfg"
        config.write_text(render_config([Route("amqp", port, BROKER)]))
        command = [haproxy, "-db", "-f", str(config)]
    elif name.startswith("router:"):
        command = router_command(name, port, work)
    else:
        command = relay_command(name, port, args)
    with started(command, port) as proc:
        yield port, proc


@contextlib.contextmanager
def storm(port: int) -> Iterator[None]:
    """A handshake storm through ``port`` in another process (not this one's GIL)."""
    proc = subprocess.Popen([sys.executable, __file__, "--storm", str(port)])
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def run_storm(port: int) -> None:
    def worker(_i: int) -> None:
        while True:
            with contextlib.suppress(Exception):
                one_handshake(port, "storm")

    in_threads(32, worker)


def latency(args: argparse.Namespace, names: list[str], work: Path) -> None:
    for load in args.loads.split(","):
        samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for _ in range(args.repeat):
            for name in names:
                with side(name, args, work) as (port, proc):
                    meter = Meter({"proxy": proc} if proc else {})
                    guard = storm(port) if load == "storm" else contextlib.nullcontext()
                    with guard:
                        if args.ping_pong:
                            sample = bench_ping_pong(port, name, meter, args.count)
                        else:
                            sample = bench_confirm(port, name, meter, args.count)
                        samples[name].append(sample)
        what = "ping-pong (Qos)" if args.ping_pong else "confirm 1 KiB"
        print(f"\n{what}, {load} ({args.repeat} rounds, medians)")
        direct = statistics.median(s["p50_us"] for s in samples["direct"])
        for name in names:
            p50 = statistics.median(s["p50_us"] for s in samples[name])
            p99 = statistics.median(s["p99_us"] for s in samples[name])
            cpu = statistics.median(s.get("proxy_cpu", 0.0) for s in samples[name])
            added = "" if name == "direct" else f"  added {p50 - direct:+7.1f}"
            print(
                f"  {name:<12} p50 {p50:8.1f} us  p99 {p99:8.1f} us{added}  proxy cpu {cpu:5.1f}%"
            )


def instructions(args: argparse.Namespace, names: list[str], work: Path) -> None:
    print(f"\ninstructions per confirmed round trip ({args.round_trips})")
    for name in names:
        if name == "direct":
            continue
        port = free_port()
        out = work / f"cg-{name}"
        out.mkdir()
        if name == "haproxy":
            haproxy = find_haproxy()
            assert haproxy is not None
            config = work / "cg-haproxy.cfg"
            config.write_text(render_config([Route("amqp", port, BROKER)]))
            command = [haproxy, "-db", "-f", str(config)]
        else:
            command = (
                router_command(name, port, work)
                if name.startswith("router:")
                else relay_command(name, port, args)
            )
        with under_callgrind(command, out, cwd=work) as pid:
            wait_listening(port)
            client = AmqpClient(port, name)
            client.handshake()
            client.open_channel()
            client.send(encode(1, Confirm.Select()))
            client.wait_method(Confirm.SelectOk)
            message = encode_publish(client.frame_max, 1024)
            for _ in range(200):
                client.send(message)
                client.wait_method(Basic.Ack)
            control(pid, "-z")
            for _ in range(args.round_trips):
                client.send(message)
                client.wait_method(Basic.Ack)
            count = dumped(pid, out) / args.round_trips
            client.close()
        print(f"  {name:<12} {count:10,.0f}")


def busy(args: argparse.Namespace, names: list[str], work: Path) -> None:
    print(f"\n{args.sessions} busy sessions, one confirmed 1 KiB publish in flight each")
    for name in names:
        with side(name, args, work) as (port, proc):
            clients = []
            for _ in range(args.sessions):
                c = AmqpClient(port, name)
                c.handshake()
                c.open_channel()
                c.send(encode(1, Confirm.Select()))
                c.wait_method(Confirm.SelectOk)
                c.sock.setblocking(False)
                clients.append(c)
            message = encode_publish(clients[0].frame_max, 1024)
            selector = selectors.DefaultSelector()
            for c in clients:
                selector.register(c.sock, selectors.EVENT_READ, c)
                c.sock.send(message)
            done = 0
            cpu0 = proc_cpu(proc) if proc else 0.0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                for key, _ in selector.select(1.0):
                    c = key.data
                    c.buf += c.sock.recv(65536)
                    acks = count_acks(c.buf)
                    for _ in range(acks):
                        c.sock.send(message)
                    done += acks
            wall = time.perf_counter() - t0
            cpu = (proc_cpu(proc) - cpu0) if proc else 0.0
            for c in clients:
                selector.unregister(c.sock)
                c.sock.close()
            rate = done / wall
            per = 1e6 * cpu / done if done else 0.0
            print(
                f"  {name:<12} {rate:9,.0f} round trips/s  proxy cpu {100 * cpu / wall:5.1f}%"
                f"  {per:6.1f} us per round trip"
            )
            time.sleep(2)  # the broker closes 500 connections


def count_acks(buf: bytearray) -> int:
    """Consume whole frames from ``buf``; the number of Basic.Ack among them."""
    acks = 0
    at = 0
    while len(buf) - at >= 7:
        frame_type, _channel, size = FRAME_HDR.unpack_from(buf, at)
        end = at + 7 + size + 1
        if end > len(buf):
            break
        if frame_type == 1 and buf[at + 7 : at + 11] == b"\x00\x3c\x00\x50":
            acks += 1
        at = end
    del buf[:at]
    return acks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--designs", default="tasks,epoll-task,thread,thread@0.0005")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--handshake-work", type=float, default=1000.0, help="us per connect")
    parser.add_argument("--only", default="latency,instructions,busy")
    parser.add_argument("--ping-pong", action="store_true", help="Qos round trips, not confirms")
    parser.add_argument("--loads", default="idle,storm", help="latency under: idle,storm")
    args = parser.parse_args()
    if args.storm:
        run_storm(args.storm)
        return
    designs = args.designs.split(",")
    only = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="engine-designs-") as scratch:
        work = Path(scratch)
        if "latency" in only:
            latency(args, ["direct", "haproxy", *designs], work)
        if "instructions" in only:
            instructions(args, ["haproxy", *designs], work)
        if "busy" in only:
            busy(args, ["direct", "haproxy", *designs], work)


if __name__ == "__main__":
    main()
