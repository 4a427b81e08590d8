"""Where a connection goes: routing snapshots (pure data; name resolution, which does
network I/O, is ``net.resolver``).

``model`` holds the frozen data (``RoutingTable`` and what it is made of),
and ``selectors`` the partition policies and selectors farms order their members with.
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
