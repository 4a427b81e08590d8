#!/usr/bin/env python3
"""What one routing decision costs (``RoutingTable.route``), pure, no sockets.

A table with 1,000 exact vhost mappings, 100 vhost patterns and 50 client-address
rules (each of two networks), 20 farms of 5 members with every selector, as the
handshake sees it. Each case is one decision for a new session and its release at
the end (what a session does once), timed over many runs; the figure is the median
of ``--repeat`` runs of ``--count`` decisions, in microseconds. The target: under 20 µs.

    .venv/bin/python benchmarks/routing_cost.py [--repeat 5] [--count 20000]

Cases:

* ``common``: an exact mapping to a round-robin farm, no rules in the table;
* ``exact``: an exact mapping, the 50 rules present and none matching the client
  (every rule is tried: the worst case for rules);
* ``pattern``: a vhost matched by the 100th pattern, answer remembered (``pattern``)
  and a new vhost each time (``pattern-cold``: the regular expression runs);
* ``rule-last``: the client matches only the last rule, which narrows the farm;
* ``weighted`` / ``least-connections`` / ``sticky``: the other selectors and a sticky farm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from amqprouter.routing import Backend, Farm, RoutingTable  # noqa: E402
from amqprouter.routing.client_rules import Rule  # noqa: E402

SELECTORS = ("round-robin", "weighted-round-robin", "least-connections")


def build(rules: bool) -> RoutingTable:
    backends = {f"b{i}": Backend(f"b{i}", "dc1", f"10.0.0.{i}", 5672) for i in range(100)}
    farms = {}
    for f in range(20):
        members = tuple(f"b{f * 5 + m}" for m in range(5))
        selector = SELECTORS[f % 3]
        weights = (3, 1, 1, 2, 1) if selector != "round-robin" else ()
        farms[f"farm{f}"] = Farm(
            f"farm{f}", selector, members, weights=weights, sticky=60.0 if f == 19 else None
        )
    mappings: dict[str, tuple[str, str]] = {}
    for v in range(1000):
        mappings[f"vhost-{v}"] = ("farm", f"farm{v % 18}")  # farm0..17; 18, 19 below
    for p in range(100):
        mappings[f"tenant-{p:03d}-*"] = ("farm", f"farm{p % 18}")
    # vhost-18 -> farm0: round-robin.
    mappings["weighted"] = ("farm", "farm1")
    mappings["least"] = ("farm", "farm2")
    mappings["sticky"] = ("farm", "farm19")
    table_rules = []
    if rules:
        for r in range(50):
            table_rules.append(
                Rule(
                    r,
                    (f"172.{16 + r % 16}.{r}.0/24", f"2001:db8:{r:x}::/48"),
                    ("backend", f"b{(r % 18) * 5}"),
                    "CONTINUE",
                )
            )
    return RoutingTable(
        backends=backends,
        farms=farms,
        mappings=mappings,
        rules=table_rules,
    )


def measure(decide: Callable[[int], object], count: int) -> float:
    """µs per decision (route and release)."""
    began = time.perf_counter()
    for index in range(count):
        decide(index)
    return (time.perf_counter() - began) / count * 1e6


def cases(plain: RoutingTable, full: RoutingTable) -> dict[str, Callable[[int], object]]:
    def once(table: RoutingTable, vhost: str, client: str) -> Callable[[int], object]:
        def decide(index: int) -> object:
            route = table.route(vhost, client)
            route.landed(route.candidates[0])
            route.release()
            return route

        return decide

    def cold(index: int) -> object:
        route = full.route(f"tenant-099-{index}", "192.168.1.1")
        route.release()
        return route

    # The last rule (priority 49) holds 172.17.49.0/24; b65 (in farm 13) is its backend.
    return {
        "common": once(plain, "vhost-18", "192.168.1.1"),
        "exact": once(full, "vhost-18", "192.168.1.1"),
        "pattern": once(full, "tenant-099-x", "192.168.1.1"),
        "pattern-cold": cold,
        "rule-last": once(full, "vhost-13", "172.17.49.7"),
        "weighted": once(full, "weighted", "192.168.1.1"),
        "least-connections": once(full, "least", "192.168.1.1"),
        "sticky": once(full, "sticky", "192.168.1.1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    plain, full = build(rules=False), build(rules=True)
    assert full.route("vhost-13", "172.17.49.7").rule is not None  # the case is what it says
    assert full.route("tenant-099-x").mapping == "tenant-099-*"
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for name, decide in cases(plain, full).items():
            results.setdefault(name, []).append(measure(decide, args.count))
    print(f"routing decision cost, median of {args.repeat} x {args.count} (µs per decision)")
    print("table: 1000 exact maps, 100 patterns, 50 rules x 2 networks, 20 farms x 5")
    worst = 0.0
    for name, figures in results.items():
        median = statistics.median(figures)
        worst = max(worst, median)
        print(f"  {name:<18} {median:6.2f}")
    print(f"worst case {worst:.2f} µs: {'under' if worst < 20 else 'OVER'} the 20 µs target")


if __name__ == "__main__":
    main()
