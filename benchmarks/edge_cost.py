#!/usr/bin/env python3
"""What the edge features cost the forwarding path (issue 12, item 7).

One connection publishing 1 KiB messages, as bench.py's publish workload, in one
interleaved run of four sides:

* **plain**: direct to the machine's broker, and through a router in simple mode;
* **edge**: direct to a private node with ``proxy_protocol = true`` (this script sends
  the PROXY v2 header itself), and through a router with PROXY v2 to that node, ten
  vhost limits (CONN_RATE, CONNECTIONS) and a DEFAULT data-rate limit set so high that it
  never throttles (the pump's per-read budget work is what is measured).

It prints each side's router/direct ratio and the difference between the two ratios:
the target is that the edge ratio stays within 3% of the plain one. A fifth side, a router
with PROXY v2 to the same node and no limits, isolates what the limits themselves cost
(edge router against it, same broker).

    .venv/bin/python benchmarks/edge_cost.py [--repeat 3] [--count 600000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench  # noqa: E402  (the workloads and the router harness; benchmarks/ is on sys.path)

from amqprouter.protocol import proxy_header  # noqa: E402
from tests.brokers import RabbitNodeFactory  # noqa: E402

#: A data rate far above what one connection moves here: the budget is kept, never hit.
UNTHROTTLED = 999_999_999
VHOSTS = [f"edge-{n}" for n in range(10)]


class ProxyingClient(bench.AmqpClient):
    """bench's raw client, sending a PROXY v2 header before the AMQP protocol header."""

    def handshake(self) -> None:
        local = self.sock.getsockname()
        peer = self.sock.getpeername()
        self.send(proxy_header.build(2, (local[0], local[1]), (peer[0], peer[1])))
        super().handshake()


def publish(port: int, label: str, count: int, client: type[bench.AmqpClient]) -> float:
    """Messages per second of one publishing connection (bench.py's publish 1 KiB)."""
    original = bench.AmqpClient
    bench.AmqpClient = client  # type: ignore[misc]  # amqp_session builds this class
    try:
        meter = bench.Meter({})
        return bench.bench_publish(port, label, meter, size=1024, count=count)["msg_s"]
    finally:
        bench.AmqpClient = original  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--count", type=int, default=600_000)
    args = ap.parse_args()
    with RabbitNodeFactory() as nodes:
        node = nodes.create_configured("proxy_protocol = true\n")
        setup = [
            f"BACKEND ADD edge dc 127.0.0.1 {node.port} SEND-PROXY-V2",
            "FARM ADD f round-robin edge",
            "MAP DEFAULT f",
            f"LIMIT DATA_RATE DEFAULT {UNTHROTTLED}",
            *(f"LIMIT CONN_RATE VHOST {v} 1000" for v in VHOSTS),
            *(f"LIMIT CONNECTIONS VHOST {v} 1000" for v in VHOSTS),
            "LISTEN START {port}",
        ]
        control = (
            "{python} -m amqprouter --control-socket {control_socket} "
            "--log-directory {log_directory}"
        )
        proxy_only = [line for line in setup if not line.startswith("LIMIT")]
        with (
            bench.Router(bench.DEFAULT_ROUTER_CMD, 0, 5672) as plain,
            bench.Router(control, 0, node.port, setup=setup, what="edge router") as edge,
            bench.Router(control, 0, node.port, setup=proxy_only, what="proxy router") as proxy,
        ):
            sides: dict[str, Callable[[], float]] = {
                "plain direct": lambda: publish(5672, "direct", args.count, bench.AmqpClient),
                "plain router": lambda: publish(plain.port, "router", args.count, bench.AmqpClient),
                "edge direct": lambda: publish(node.port, "node", args.count, ProxyingClient),
                "edge router": lambda: publish(edge.port, "edge", args.count, bench.AmqpClient),
                "proxy router": lambda: publish(proxy.port, "proxy", args.count, bench.AmqpClient),
            }
            runs: dict[str, list[float]] = {name: [] for name in sides}
            for round_ in range(args.repeat):
                for name, run in sides.items():
                    runs[name].append(run())
                    print(f"round {round_ + 1} {name:13} {runs[name][-1]:>12,.0f} msg/s")
    median = {name: statistics.median(values) for name, values in runs.items()}
    plain_ratio = median["plain router"] / median["plain direct"]
    edge_ratio = median["edge router"] / median["edge direct"]
    print(f"\nplain: router/direct {plain_ratio:.3f}")
    print(f"edge (PROXY v2, 10 vhost limits, data-rate budget): router/direct {edge_ratio:.3f}")
    change = (edge_ratio - plain_ratio) / plain_ratio
    print(f"edge vs plain: {change:+.1%} (target: within 3%)")
    limits = median["edge router"] / median["proxy router"] - 1
    print(f"the limits alone (edge router vs PROXY-only router, same node): {limits:+.1%}")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(bench.IO_TIMEOUT)
    sys.exit(main())
