#!/usr/bin/env python3
"""What primed broker connections cost the broker (issue 13, item 2).

A router in simple mode in front of the machine's RabbitMQ serves three patterns of
client connections (each a full handshake and close, as bench.py's handshake workload):

* **steady**: connections one after another, as fast as they go;
* **bursts**: 32 at once, every 2 s (the pool sized by the recent rate, then idle);
* **sparse**: one every 1.5 s (about the least demand that keeps a pool).

After each pattern (and a pause long enough for the pool to age out and empty), the
router's own counters (/metrics: primed connections opened, used, discarded) give the
primed connections opened and discarded per 1,000 routed connections, and the broker's
log gives the lines those discards caused there (RabbitMQ logs a connection closed
before its handshake as a warning).

    .venv/bin/python benchmarks/primed_cost.py [--broker-log /var/log/rabbitmq/rabbit@localhost.log]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench  # noqa: E402  (the workloads and the router harness; benchmarks/ is on sys.path)

from tests.brokers import free_port  # noqa: E402

#: What RabbitMQ logs (one warning, two lines) for a connection closed before StartOk.
CLOSED_UNUSED = "client unexpectedly closed TCP connection"
#: Longer than the pool's MAX_AGE and DEMAND_WINDOW: every primed connection is gone.
SETTLE = 11.0


def primed_counters(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("amqprouter_primed_connections_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counters[outcome] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("amqprouter_primed_misses_total "):
            counters["missed"] = float(line.rsplit(" ", 1)[1])
    return counters


def steady(port: int) -> int:
    for _ in range(1000):
        bench.one_handshake(port, "steady")
    return 1000


def bursts(port: int) -> int:
    for _ in range(10):
        threads = [
            threading.Thread(target=bench.one_handshake, args=(port, "burst")) for _ in range(32)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(bench.IO_TIMEOUT)
        time.sleep(2.0)
    return 320


def sparse(port: int) -> int:
    for _ in range(20):
        bench.one_handshake(port, "sparse")
        time.sleep(1.5)
    return 20


def broker_lines(log: Path, start: int) -> int:
    """Lines saying a connection was closed before its handshake, written since ``start``."""
    with log.open("rb") as file:
        file.seek(start)
        return sum(CLOSED_UNUSED.encode() in line for line in file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker-log", type=Path, default=Path("/var/log/rabbitmq/rabbit@localhost.log")
    )
    args = parser.parse_args()
    http_port = free_port()
    command = bench.DEFAULT_ROUTER_CMD + f" --http-port {http_port} --http-host 127.0.0.1"
    patterns: list[tuple[str, Callable[[int], int]]] = [
        ("steady", steady),
        ("bursts of 32 every 2 s", bursts),
        ("one every 1.5 s", sparse),
    ]
    print(
        f"{'pattern':<24}{'routed':>8}{'used':>8}{'opened/1k':>11}{'discarded/1k':>14}"
        f"{'broker lines':>14}"
    )
    with bench.Router(command, 0, 5672) as router:
        for name, run in patterns:
            before = primed_counters(http_port)
            log_start = args.broker_log.stat().st_size
            routed = run(router.port)
            time.sleep(SETTLE)
            after = primed_counters(http_port)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            lines = broker_lines(args.broker_log, log_start)
            print(
                f"{name:<24}{routed:>8}{delta['used']:>8.0f}"
                f"{1000 * delta['opened'] / routed:>11.0f}"
                f"{1000 * delta['discarded'] / routed:>14.0f}{lines:>14}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
