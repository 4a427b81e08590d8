"""The status page shows the routing policies: weights and selector, STICKY, mappings in
matching order (patterns after exact vhosts), client-address rules."""

from __future__ import annotations

from amqprouter.observe.stats import StatsCollector
from amqprouter.observe.status_page import status_page
from amqprouter.routing import Backend, Farm, RoutingTable
from amqprouter.routing.client_rules import Rule
from amqprouter.server import Server
from amqprouter.session import SessionSettings


def test_the_status_page_shows_weights_stickiness_patterns_and_rules() -> None:
    backends = {n: Backend(n, "dc", f"{n}.example", 5672) for n in ("b1", "b2")}
    table = RoutingTable(
        backends=backends,
        farms={"w": Farm("w", "weighted-round-robin", ("b1", "b2"), weights=(3, 0), sticky=120.0)},
        mappings={"tenant-*": ("farm", "w"), "zeta": ("backend", "b1")},
        rules=[Rule(10, ("10.1.0.0/16", "2001:db8::/32"), ("backend", "b2"), "BREAK")],
    )
    server = Server(SessionSettings(), table)
    page = status_page(server, StatsCollector(server.sessions, 1.0), ready=None, live=None)
    assert "<td>weighted-round-robin</td><td>b1*3, b2*0</td><td>sticky 120 s</td>" in page
    # Exact first, then patterns, though "tenant-*" sorts before "zeta".
    assert page.index("<td>zeta</td>") < page.index("<td>tenant-*</td>")
    assert "Client-address rules" in page
    assert "<td>10</td><td>10.1.0.0/16, 2001:db8::/32</td><td>backend b2</td><td>BREAK</td>" in page
