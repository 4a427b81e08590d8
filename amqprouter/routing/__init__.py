"""Where a connection goes: routing snapshots and backend name resolution."""

from amqprouter.routing.model import Backend, NoRoute, RoutingTable
from amqprouter.routing.resolver import Resolver

__all__ = ["Backend", "NoRoute", "Resolver", "RoutingTable"]
