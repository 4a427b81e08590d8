"""Routing data: frozen values, replaced whole, never mutated in place.

A session takes one ``RoutingTable`` snapshot when the client's Connection.Open
arrives and routes with it, so a configuration change is either wholly visible to
a new connection or not at all. ``control.routing_commands.apply`` turns a control command
into the next snapshot.

The one piece of mutable state is each farm's round-robin ``Markers``. It sits in
the farm's ``FarmLayout`` (its partitions, computed when the table is built), which
a new table inherits from the table it was evolved from as long as the layout was
computed from the same farm, member backends and datacenter. That ``apply`` drops a
farm's layout on purpose when amqpprox would repartition it (FARM ADD, FARM
PARTITION, DATACENTER SET), which resets its markers.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from amqprouter.routing import selectors


def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    """A read-only copy (insertion order kept), so a snapshot cannot change under a reader."""
    return MappingProxyType(dict(mapping))


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


@attrs.frozen
class Backend:
    """A broker endpoint.

    ``dns`` backends (BACKEND ADD_DNS) resolve ``host`` at each connection attempt;
    static ones (BACKEND ADD) were resolved once, when added, to ``ip``.
    """

    name: str
    datacenter: str
    host: str
    port: int
    dns: bool = True
    ip: str | None = None
    #: The PROXY protocol version sent first on each connection: 0 none, 1 (SEND-PROXY)
    #: or 2 (SEND-PROXY-V2).
    send_proxy: int = 0
    tls: bool = False

    @property
    def connect_host(self) -> str:
        """What to resolve and connect to: ``host`` for a DNS backend, else ``ip``."""
        if self.dns or self.ip is None:
            return self.host
        return self.ip

    @property
    def label(self) -> str:
        # An IPv6 literal in brackets, as net.sockets.endpoint writes it (a layer above).
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name} ({host}:{self.port})"


@attrs.frozen
class Farm:
    """A named group of backends (by name, in the order given) and how to pick among them."""

    name: str
    selector: str = "round-robin"
    members: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()


#: Where a vhost goes: ("backend", backend name) or ("farm", farm name).
Target: TypeAlias = tuple[Literal["backend", "farm"], str]

#: What a farm layout was computed from: the farm, the router's datacenter and the
#: member backends (None for a member that does not exist).
LayoutKey: TypeAlias = tuple[Farm, str, tuple[Backend | None, ...]]


@attrs.frozen
class FarmLayout:
    """A farm's partitions and their round-robin markers (see ``selectors``)."""

    key: LayoutKey = attrs.field(repr=False)
    partitions: selectors.Partitions
    markers: selectors.Markers = attrs.field(eq=False)

    @classmethod
    def build(cls, key: LayoutKey) -> FarmLayout:
        farm, datacenter, members = key
        present = [backend for backend in members if backend is not None]
        partitions = selectors.partition(present, farm.policies, datacenter)
        return cls(key, partitions, selectors.Markers(len(partitions)))


class NoRoute(Exception):
    """No broker is mapped for a vhost.

    ``str(exc)`` (also ``text``) is what the client is told; ``detail`` says why,
    for logs and CONN (the mapping names a farm or backend that does not exist, ...).
    """

    def __init__(self, text: str, detail: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.detail = text if detail is None else detail


@attrs.frozen(kw_only=True)
class RoutingTable:
    """Backends, farms, vhost mappings, the default farm and the router's datacenter.

    ``layouts`` is derived (and filled in when the table is built); pass the previous
    table's ``layouts`` (``attrs.evolve`` does) to keep round-robin positions. It is
    left out of equality: two tables with the same configuration are equal.
    """

    backends: Mapping[str, Backend] = attrs.field(factory=dict, converter=_frozen)
    farms: Mapping[str, Farm] = attrs.field(factory=dict, converter=_frozen)
    mappings: Mapping[str, Target] = attrs.field(factory=dict, converter=_frozen)
    default_farm: str | None = None
    datacenter: str = ""
    #: Backends taken out of rotation (BACKEND DISABLE/DRAIN): configuration, so part
    #: of the snapshot; new connections skip them, existing sessions stay.
    disabled: frozenset[str] = attrs.field(factory=frozenset, converter=_names)
    layouts: Mapping[str, FarmLayout] = attrs.field(factory=dict, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        layouts: dict[str, FarmLayout] = {}
        for name, farm in self.farms.items():
            key: LayoutKey = (
                farm,
                self.datacenter,
                tuple(self.backends.get(member) for member in farm.members),
            )
            previous = self.layouts.get(name)
            keep = previous is not None and previous.key == key
            layouts[name] = previous if keep and previous is not None else FarmLayout.build(key)
        object.__setattr__(self, "layouts", MappingProxyType(layouts))

    @classmethod
    def single(cls, backend: Backend) -> RoutingTable:
        """Every vhost to ``backend``: what simple mode's commands build.

        (BACKEND ADD_DNS default-backend …, FARM ADD default round-robin
        default-backend, MAP DEFAULT default.)
        """
        farm = Farm("default", "round-robin", (backend.name,))
        return cls(
            backends={backend.name: backend}, farms={farm.name: farm}, default_farm="default"
        )

    def candidates(self, vhost: str, down: Container[str] = ()) -> tuple[Backend, ...]:
        """The backends one new connection to ``vhost`` tries, in order.

        A farm advances its round-robin markers: call once per connection.
        Backends named in ``down`` (marked down, see ``routing.health``) go last, in farm
        order, after the selector's order of the others, so the healthy members
        share the rotation evenly; when every member is down they are all tried in
        the selector's order anyway (a slow attempt beats a refusal).

        Raises:
            NoRoute: nothing usable is mapped; the text is for the client, ``detail``
                for the log.
        """
        text = f"No known broker mapping for vhost {vhost}"
        target = self.mappings.get(vhost)
        if target is None:
            if self.default_farm is None:
                raise NoRoute(text, f"vhost {vhost} is not mapped and there is no default farm")
            name = self.default_farm
            subject = f"vhost {vhost} is not mapped and the default farm {name}"
        else:
            kind, name = target
            subject = f"vhost {vhost} is mapped to {kind} {name}, which"
            if kind == "backend":
                backend = self.backends.get(name)
                if backend is None:
                    raise NoRoute(text, f"{subject} does not exist")
                if name in self.disabled:
                    raise NoRoute(_all_disabled(vhost), f"{subject} is disabled")
                return (backend,)
        farm = self.farms.get(name)
        if farm is None:
            raise NoRoute(text, f"{subject} does not exist")
        selector = selectors.SELECTORS.get(farm.selector)
        if selector is None:
            raise NoRoute(text, f"{subject} has an unknown selector {farm.selector!r}")
        layout = self.layouts[name]
        if not layout.partitions:
            raise NoRoute(text, f"{subject} has no backends")
        partitions = layout.partitions
        if self.disabled:
            # Emptied partitions stay, so each keeps its marker; a selector skips them.
            partitions = tuple(
                tuple(backend for backend in partition if backend.name not in self.disabled)
                for partition in partitions
            )
            if not any(partitions):
                raise NoRoute(_all_disabled(vhost), f"{subject} has only disabled backends")
        members = [backend for partition in partitions for backend in partition]
        unhealthy = tuple(backend for backend in members if backend.name in down)
        if not unhealthy or len(unhealthy) == len(members):
            return selector(partitions, layout.markers)
        healthy = tuple(
            tuple(backend for backend in partition if backend.name not in down)
            for partition in partitions
        )
        return selector(healthy, layout.markers) + unhealthy


def _all_disabled(vhost: str) -> str:
    return f"No enabled broker for vhost {vhost}: its backends are disabled"
