"""Where a connection goes: routing snapshots (pure data; name resolution, which does
network I/O, is ``net.resolver``).

``model`` holds the frozen data (``RoutingTable`` and what it is made of) and the
decision (``RoutingTable.route``, docs/routing.md), ``selectors`` the partition policies
and selectors farms order their members with, ``vhost_patterns`` and ``client_rules``
the pattern mappings and the client-address rules, ``load`` and ``sticky`` the runtime
memories a decision reads (live sessions per backend, sticky clients).
The control commands that change a snapshot live in ``control.routing_commands``.
"""

from amqprouter.routing import selectors
from amqprouter.routing.model import (
    Backend,
    Farm,
    FarmLayout,
    NoRoute,
    Route,
    RoutingTable,
    Target,
)
from amqprouter.routing.selectors import Markers

__all__ = [
    "Backend",
    "Farm",
    "FarmLayout",
    "Markers",
    "NoRoute",
    "Route",
    "RoutingTable",
    "Target",
    "selectors",
]
