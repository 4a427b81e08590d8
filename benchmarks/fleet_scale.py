#!/usr/bin/env python3
"""The fleet's scale figures: the plain router against ``--workers 1, 2, 4`` in one run,
and how long a BACKEND ADD takes to be seen everywhere.

Run from the repository root (RabbitMQ on 127.0.0.1:5672, guest/guest; redis-server
installed):

    .venv/bin/python benchmarks/fleet_scale.py [--workers 1,2,4] [--storm 2000]

For each router (plain, then each --workers N): handshakes per second sequential and 32
in parallel, the reconnection storm (bench.py's storm: N clients, 64 in flight, each a
handshake, a channel and a close) and publishing 1 KiB messages on one connection,
all with bench.py's own workloads. Then the propagation of a BACKEND ADD: through the
supervisor to every worker (each worker's private control socket polled), and from
one router to a second one sharing a private redis-server (--config-store). The
medians of several changes. docs/fleet.md ("Scale on this machine") reads the output.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from bench import (  # noqa: E402 - after the path above
    STORM_IN_FLIGHT,
    Meter,
    bench_handshake,
    bench_publish,
    bench_storm,
    free_port,
)

from tests.redis_server import start_redis  # noqa: E402

BROKER_PORT = 5672
WAIT = 30.0
CHANGES = 10  # BACKEND ADDs timed per propagation figure


def ctl(path: Path, line: str) -> str:
    """One control command as a plain client sends it: the line, the reply to EOF."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(WAIT)
        conn.connect(str(path))
        conn.sendall(line.encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.decode()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def router(
    workdir: Path, name: str, workers: int | None, *extra: str
) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    port, sock = free_port(), workdir / name
    args = [
        sys.executable, "-m", "amqprouter", "--listen-port", str(port),
        "--destination-dns", "127.0.0.1", "--destination-port", str(BROKER_PORT),
        "--control-socket", str(sock), "-v", "1", *extra,
    ]  # fmt: skip
    if workers is not None:
        args += ["--workers", str(workers)]
    err = (workdir / f"{name}.err").open("wb")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=HERE.parent)
    try:
        wait_until(lambda: sock.exists() and port_open(port), f"{name} to listen")
        yield port, sock, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        err.close()


def throughput(port: int, process: subprocess.Popen[bytes], storm: int) -> dict[str, float]:
    meter = Meter({"router": psutil.Process(process.pid)}, proxy="router")
    seq = bench_handshake(port, "router", meter, workers=1, each=300)
    par = bench_handshake(port, "router", meter, workers=32, each=20)
    st = bench_storm(port, "router", meter, clients=storm, in_flight=STORM_IN_FLIGHT)
    pub = bench_publish(port, "router", meter, size=1024, count=200_000)
    return {
        "hs_seq": seq["conn_s"],
        "hs_32": par["conn_s"],
        "storm_s": st["storm_s"],
        "storm_p99_ms": st["p99_us"] / 1000,
        "pub_msg_s": pub["msg_s"],
        "pub_router_cpu": pub["router_cpu"],
    }


def lists(path: Path, name: str) -> bool:
    return name in ctl(path, "BACKEND PRINT")


def has_workers(sock: Path, count: int) -> bool:
    return len(worker_sockets(sock)) == count


def worker_sockets(sock: Path) -> list[Path]:
    return sorted(sock.parent.glob(f".{sock.name}.workers-*/w*.sock"))


def propagation_workers(sock: Path, count: int) -> float:
    """Median seconds from sending BACKEND ADD to the supervisor until every worker's own
    socket lists the backend."""
    sockets = worker_sockets(sock)
    assert len(sockets) == count, sockets
    took = []
    for i in range(CHANGES):
        name = f"prop{i}"
        began = time.perf_counter()
        ctl(sock, f"BACKEND ADD {name} dc1 127.0.0.{i + 2} 5672")
        for each in sockets:
            wait_until(partial(lists, each, name), name)
        took.append(time.perf_counter() - began)
    return statistics.median(took)


def propagation_store(first: Path, second: Path) -> tuple[float, float]:
    """Median seconds from sending BACKEND ADD to one router until the other, sharing
    its Redis, lists the backend; and the longest."""
    took = []
    for i in range(CHANGES):
        name = f"store{i}"
        began = time.perf_counter()
        ctl(first, f"BACKEND ADD {name} dc1 127.0.0.{i + 2} 5672")
        wait_until(partial(lists, second, name), name)
        took.append(time.perf_counter() - began)
        time.sleep(0.1)
    return statistics.median(took), max(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--storm", type=int, default=2000)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    print(f"cores: {os.cpu_count()} (load {os.getloadavg()[0]:.2f}); storm {args.storm:,}")
    with tempfile.TemporaryDirectory(prefix="fleet-scale-") as tmp:
        workdir = Path(tmp)
        header = "router       hs seq/s  hs x32/s  storm s  p99 ms  publish msg/s  cpu%"
        print(header)
        for workers in [None, *counts]:
            label = "plain" if workers is None else f"--workers {workers}"
            with router(workdir, f"r{workers}", workers) as (port, _sock, process):
                r = throughput(port, process, args.storm)
            print(
                f"{label:<12} {r['hs_seq']:8.0f}  {r['hs_32']:8.0f}  {r['storm_s']:7.2f}"
                f"  {r['storm_p99_ms']:6.1f}  {r['pub_msg_s']:13,.0f}  {r['pub_router_cpu']:4.0f}"
            )
        for workers in counts:
            if workers < 2:
                continue
            with router(workdir, f"p{workers}", workers) as (_port, sock, _process):
                wait_until(partial(has_workers, sock, workers), "the workers")
                median = propagation_workers(sock, workers)
            print(f"BACKEND ADD on all {workers} workers: median {1000 * median:.1f} ms")
        redis = start_redis()
        try:
            store = ("--config-store", redis.url)
            with (
                router(workdir, "s1", None, *store) as (_p1, first, _a),
                router(workdir, "s2", None, *store) as (_p2, second, _b),
            ):
                time.sleep(1.5)  # both joined
                median, longest = propagation_store(first, second)
            print(
                f"BACKEND ADD to a second router through Redis: median {1000 * median:.1f} ms,"
                f" longest {1000 * longest:.1f} ms"
            )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
