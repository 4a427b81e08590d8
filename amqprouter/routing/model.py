"""Routing data: frozen values, replaced whole, never mutated in place.

A session takes one ``RoutingTable`` snapshot when the client's Connection.Open
arrives and routes with it (``RoutingTable.route``), so a configuration change is
either wholly visible to a new connection or not at all.
``control.routing_commands.apply`` turns a control command into the next snapshot.

The mutable pieces are memories that outlive a snapshot, each carried from a table
to the tables evolved from it: each farm's selector state (``selectors.FarmState``,
in the farm's ``FarmLayout``, kept while the layout was computed from the same farm
members, policies, selector, member backends and datacenter; ``apply`` drops it on
purpose when amqpprox would repartition: FARM ADD, FARM PARTITION, DATACENTER SET),
the live sessions per backend (``load``) and the sticky clients (``sticky``).

The decision order of ``route`` (docs/routing.md has it with examples):

1. the vhost's mapping: its exact mapping, else the most specific pattern
   (``vhost_patterns``), else the default farm, else refused (506); a mapping with a
   rename (``renames``, MAP ... AS) gives the vhost the broker is asked to open;
2. the client-address rules (``client_rules``), lowest priority first: the first rule
   that holds the client's address and shares a backend with the mapping's narrows
   the candidates to those shared backends, if one of them is up; else BREAK refuses
   (320) and CONTINUE goes on to the next rule; no rule applying leaves them whole;
3. disabled and drained (weight 0) members are dropped (none left: refused, 506);
4. a sticky farm's client keeps its member if that member is still a healthy candidate;
5. else the farm's selector orders the healthy candidates; those marked down follow.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from amqprouter.protocol import constants
from amqprouter.routing import selectors
from amqprouter.routing.client_rules import Rule, RuleIndex, address_key
from amqprouter.routing.load import BackendLoad
from amqprouter.routing.sticky import StickyTable
from amqprouter.routing.vhost_patterns import VhostPatterns, is_pattern

#: How a Route names the mapping of a vhost routed by the default farm.
DEFAULT_MAPPING = "(default)"


def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    """A read-only copy (insertion order kept), so a snapshot cannot change under a reader."""
    return MappingProxyType(dict(mapping))


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


def _by_priority(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(sorted(rules, key=lambda rule: rule.priority))


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
    """A named group of backends (by name, in the order given) and how to pick among them.

    ``weights`` are the members' weights, in member order (empty: all 1); ``sticky`` is
    FARM STICKY's timeout in seconds (None: off).
    """

    name: str
    selector: str = "round-robin"
    members: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    weights: tuple[int, ...] = ()
    sticky: float | None = None

    def __attrs_post_init__(self) -> None:
        if not self.weights:
            object.__setattr__(self, "weights", (1,) * len(self.members))
        elif len(self.weights) != len(self.members):
            raise ValueError(
                f"farm {self.name}: {len(self.members)} members, weights {self.weights}"
            )

    def weight(self, member: str) -> int:
        return self.weights[self.members.index(member)]

    @property
    def weighted(self) -> bool:
        """Whether any member weighs other than 1 (a drained member included)."""
        return any(weight != 1 for weight in self.weights)


#: Where a vhost goes: ("backend", backend name) or ("farm", farm name).
Target: TypeAlias = tuple[Literal["backend", "farm"], str]

#: What a farm layout was computed from: the farm's selector, members and policies
#: (not its weights or STICKY: FARM WEIGHT keeps the selector's memory), the router's
#: datacenter and the member backends (None for a member that does not exist).
LayoutKey: TypeAlias = tuple[
    tuple[str, tuple[str, ...], tuple[str, ...]], str, tuple[Backend | None, ...]
]


def layout_key(farm: Farm, datacenter: str, members: tuple[Backend | None, ...]) -> LayoutKey:
    return ((farm.selector, farm.members, farm.policies), datacenter, members)


@attrs.frozen
class FarmLayout:
    """A farm's partitions and its selector's state (see ``selectors``)."""

    key: LayoutKey = attrs.field(repr=False)
    partitions: selectors.Partitions
    state: selectors.FarmState = attrs.field(eq=False, repr=False)

    @property
    def markers(self) -> selectors.Markers:
        return self.state.markers

    @classmethod
    def build(cls, key: LayoutKey) -> FarmLayout:
        (_selector, _members, policies), datacenter, members = key
        present = [backend for backend in members if backend is not None]
        partitions = selectors.partition(present, policies, datacenter)
        return cls(key, partitions, selectors.FarmState(len(partitions)))


class NoRoute(Exception):
    """No broker is mapped for a vhost, or none may take this client.

    ``str(exc)`` (also ``text``) is what the client is told, with ``reply_code``
    (506 when nothing usable is mapped, 320 when a BREAK rule refuses); ``detail`` says
    why, for logs (the mapping names a farm or backend that does not exist, ...).
    """

    def __init__(
        self, text: str, detail: str | None = None, reply_code: int = constants.RESOURCE_ERROR
    ) -> None:
        super().__init__(text)
        self.text = text
        self.detail = text if detail is None else detail
        self.reply_code = reply_code


class Route:
    """One session's routing decision, and what it holds while the session lives.

    ``candidates`` are the backends to try, in order; ``mapping`` is what matched the
    vhost (the vhost itself, a pattern, or ``DEFAULT_MAPPING``), ``rule`` the rule that
    narrowed the candidates (None: none did), ``farm`` the farm chosen from (None for a
    backend mapping), ``broker_vhost`` the vhost the broker is asked to open when the
    mapping renames it (None: the client's own). The route holds one count of
    ``RoutingTable.load`` from the start, on its first candidate; ``landed`` moves it to
    the backend the session got (and, for a sticky farm, makes the client keep it);
    ``release`` gives everything back when the session ends (at most once; safe to call
    for a session that never landed).
    """

    __slots__ = (
        "_held",
        "_load",
        "_sticky",
        "_stuck",
        "broker_vhost",
        "candidates",
        "client",
        "farm",
        "mapping",
        "rule",
    )

    def __init__(
        self,
        candidates: tuple[Backend, ...],
        mapping: str,
        rule: Rule | None,
        farm: Farm | None,
        load: BackendLoad,
        sticky: StickyTable | None,
        client: str | None,
        broker_vhost: str | None = None,
    ) -> None:
        self.candidates = candidates
        self.mapping = mapping
        self.broker_vhost = broker_vhost
        self.rule = rule
        self.farm = farm
        self.client = client
        self._load = load
        self._sticky = sticky if farm is not None and farm.sticky is not None else None
        self._stuck = False
        self._held: str | None = candidates[0].name
        load.take(self._held)

    def landed(self, backend: Backend) -> None:
        """The session connected to ``backend`` (one of ``candidates``)."""
        if self._held != backend.name:
            if self._held is not None:
                self._load.give_back(self._held)
            self._held = backend.name
            self._load.take(backend.name)
        sticky, farm = self._sticky, self.farm
        if sticky is not None and farm is not None and self.client is not None:
            if self._stuck:
                sticky.detach(farm.name, self.client)
            assert farm.sticky is not None
            self._stuck = sticky.attach(farm.name, self.client, backend.name, farm.sticky)

    def release(self) -> None:
        """The session ended: its count and its hold on a sticky entry go."""
        if self._held is not None:
            self._load.give_back(self._held)
            self._held = None
        if self._stuck and self._sticky is not None and self.farm is not None:
            assert self.client is not None
            self._sticky.detach(self.farm.name, self.client)
            self._stuck = False


@attrs.frozen(kw_only=True)
class RoutingTable:
    """Backends, farms, vhost mappings (exact and patterns), the default farm, the
    client-address rules and the router's datacenter.

    ``layouts`` is derived (and filled in when the table is built); pass the previous
    table's ``layouts`` (``attrs.evolve`` does) to keep the selectors' positions. It,
    ``load`` and ``sticky`` are left out of equality: two tables with the same
    configuration are equal.
    """

    backends: Mapping[str, Backend] = attrs.field(factory=dict, converter=_frozen)
    farms: Mapping[str, Farm] = attrs.field(factory=dict, converter=_frozen)
    mappings: Mapping[str, Target] = attrs.field(factory=dict, converter=_frozen)
    #: The vhost the broker is asked to open, by mapping (MAP ... AS): an exact vhost's
    #: or a pattern's (every vhost it matches opens that one vhost on the broker).
    renames: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    default_farm: str | None = None
    datacenter: str = ""
    #: Pooling mode per vhost (MAP POOL vhost ON|OFF): True pools the vhost's clients,
    #: False keeps them unpooled even under ``--pool``; a vhost not here follows ``--pool``.
    pools: Mapping[str, bool] = attrs.field(factory=dict, converter=_frozen)
    #: Backends taken out of rotation (BACKEND DISABLE/DRAIN): configuration, so part
    #: of the snapshot; new connections skip them, existing sessions stay.
    disabled: frozenset[str] = attrs.field(factory=frozenset, converter=_names)
    #: Client-address rules (RULE ADD), by priority.
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_by_priority)
    layouts: Mapping[str, FarmLayout] = attrs.field(factory=dict, eq=False, repr=False)
    #: Live sessions per backend and the sticky clients: runtime memory, not
    #: configuration (left out of equality), shared with the tables evolved from this.
    load: BackendLoad = attrs.field(factory=BackendLoad, eq=False, repr=False)
    sticky: StickyTable = attrs.field(factory=StickyTable, eq=False, repr=False)
    #: Derived: the pattern mappings in matching order, each rule's backend names (None:
    #: its target does not exist), each weighted farm's weights by member.
    patterns: VhostPatterns[Target] = attrs.field(init=False, eq=False, repr=False)
    _rule_members: tuple[frozenset[str] | None, ...] = attrs.field(init=False, eq=False, repr=False)
    _weights: Mapping[str, Mapping[str, int]] = attrs.field(init=False, eq=False, repr=False)
    _rule_index: RuleIndex = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        layouts: dict[str, FarmLayout] = {}
        weights: dict[str, Mapping[str, int]] = {}
        for name, farm in self.farms.items():
            key = layout_key(
                farm, self.datacenter, tuple(self.backends.get(member) for member in farm.members)
            )
            previous = self.layouts.get(name)
            keep = previous is not None and previous.key == key
            layouts[name] = previous if keep and previous is not None else FarmLayout.build(key)
            if farm.weighted:
                weights[name] = dict(zip(farm.members, farm.weights, strict=True))
        object.__setattr__(self, "layouts", MappingProxyType(layouts))
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_rule_index", RuleIndex(self.rules))
        object.__setattr__(
            self,
            "patterns",
            VhostPatterns((v, t) for v, t in self.mappings.items() if is_pattern(v)),
        )
        object.__setattr__(
            self, "_rule_members", tuple(self._members_of(r.target) for r in self.rules)
        )

    def _members_of(self, target: Target) -> frozenset[str] | None:
        kind, name = target
        if kind == "backend":
            return frozenset((name,)) if name in self.backends else None
        farm = self.farms.get(name)
        return None if farm is None else frozenset(farm.members)

    def mapping_order(self) -> list[tuple[str, Target]]:
        """Every vhost mapping in the order a vhost is matched against them: the exact
        ones (by name: only one can match), then the patterns, most specific first."""
        exact = sorted((v, t) for v, t in self.mappings.items() if not is_pattern(v))
        return exact + list(self.patterns.ordered)

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
        """``route``'s candidates for a client with no address (so no rule and no
        sticky entry applies), its hold on ``load`` given back at once."""
        route = self.route(vhost, None, down)
        route.release()
        return route.candidates

    def route(self, vhost: str, client: str | None = None, down: Container[str] = ()) -> Route:
        """The routing decision for one new connection to ``vhost`` from ``client`` (its
        IP address, the PROXY header's source when there is one; None: no rule or
        sticky entry applies), in the order the module docstring gives.

        A farm's selector advances its state: call once per connection, and
        ``release`` the route when the session ends. Backends named in ``down``
        (marked down, see ``routing.health``) go last, in farm order, after the
        selector's order of the others, so the healthy members share the rotation
        evenly; when every candidate is down they are all tried in the selector's
        order anyway (a slow attempt beats a refusal), unless a BREAK rule refuses.

        Raises:
            NoRoute: nothing usable is mapped, or a BREAK rule refused the client;
                the text and reply code are for the client, ``detail`` for the log.
        """
        mapping = vhost
        target: Target | None = self.mappings.get(vhost)
        if target is None:
            found = self.patterns.match(vhost) if self.patterns else None
            if found is not None:
                mapping, target = found
            elif self.default_farm is None:
                raise NoRoute(
                    _no_mapping(vhost), f"vhost {vhost} is not mapped and there is no default farm"
                )
            else:
                mapping, target = DEFAULT_MAPPING, ("farm", self.default_farm)
        # The default farm renames nothing (a mapping's rename is keyed by its vhost).
        renamed = (
            self.renames.get(mapping)
            if self.renames and self.mappings.get(mapping) is target
            else None
        )
        assert target is not None
        kind, name = target
        farm: Farm | None = None
        if kind == "backend":
            backend = self.backends.get(name)
            if backend is None:
                raise _refused(vhost, mapping, target, "does not exist")
            partitions: selectors.Partitions = ((backend,),)
        else:
            farm = self.farms.get(name)
            if farm is None:
                raise _refused(vhost, mapping, target, "does not exist")
            if farm.selector not in selectors.SELECTORS:
                raise _refused(vhost, mapping, target, f"has an unknown selector {farm.selector!r}")
            partitions = self.layouts[name].partitions
            if not partitions:
                raise _refused(vhost, mapping, target, "has no backends")
        weights = self._weights.get(name) if farm is not None else None
        rule: Rule | None = None
        allowed: frozenset[str] | None = None
        if self.rules and client is not None:
            rule, allowed = self._narrow(vhost, client, partitions, weights, down)
        if farm is None:
            if name in self.disabled:
                raise _refused(vhost, mapping, target, "is disabled", _all_disabled(vhost))
            # A direct mapping ignores health: its one backend is tried whatever it is.
            return Route(partitions[0], mapping, rule, None, self.load, None, client, renamed)
        disabled = self.disabled
        if disabled or weights is not None or allowed is not None:
            # Emptied partitions stay, so each keeps its marker; a selector skips them.
            partitions = tuple(
                tuple(
                    backend
                    for backend in partition
                    if backend.name not in disabled
                    and (weights is None or weights[backend.name] > 0)
                    and (allowed is None or backend.name in allowed)
                )
                for partition in partitions
            )
            if not any(partitions):
                raise _refused(
                    vhost,
                    mapping,
                    target,
                    "has only disabled or drained backends",
                    _all_disabled(vhost),
                )
        unhealthy: tuple[Backend, ...] = ()
        if down:
            unhealthy = tuple(b for partition in partitions for b in partition if b.name in down)
        if farm.sticky is not None and client is not None:
            kept = self.sticky.member(farm.name, client)
            if kept is not None and kept not in down:
                members = [backend for partition in partitions for backend in partition]
                for backend in members:
                    if backend.name == kept:
                        rest = tuple(b for b in members if b is not backend and b.name not in down)
                        return Route(
                            (backend, *rest, *unhealthy),
                            mapping,
                            rule,
                            farm,
                            self.load,
                            self.sticky,
                            client,
                            renamed,
                        )
        selector = selectors.SELECTORS[farm.selector]
        state = self.layouts[name].state
        load = self.load
        if not unhealthy or len(unhealthy) == sum(map(len, partitions)):
            ordered = selector(partitions, state, weights or _NO_WEIGHTS, load)
        else:
            healthy = tuple(
                tuple(backend for backend in partition if backend.name not in down)
                for partition in partitions
            )
            ordered = selector(healthy, state, weights or _NO_WEIGHTS, load) + unhealthy
        return Route(ordered, mapping, rule, farm, load, self.sticky, client, renamed)

    def _narrow(
        self,
        vhost: str,
        client: str,
        partitions: selectors.Partitions,
        weights: Mapping[str, int] | None,
        down: Container[str],
    ) -> tuple[Rule | None, frozenset[str] | None]:
        """The first rule that narrows the mapping's backends for ``client``, and the
        backends it narrows them to; (None, None) when none does.

        Raises:
            NoRoute: a matching BREAK rule found every backend it narrows to down.
        """
        key = address_key(client)
        if key is None:
            return None, None
        matched = self._rule_index.matching(key)
        if not matched:
            return None, None
        mapped = frozenset(backend.name for partition in partitions for backend in partition)
        for index in matched:
            rule = self.rules[index]
            members = self._rule_members[index]
            shared = mapped & members if members is not None else frozenset()
            if not shared:
                continue  # nothing in common with this vhost's backends: not its rule
            if any(
                name not in down
                and name not in self.disabled
                and (weights is None or weights[name] > 0)
                for name in shared
            ):
                return rule, shared
            if rule.on_down == "BREAK":
                raise NoRoute(
                    f"CONNECTION_FORCED - no backend available for vhost {vhost}: "
                    f"{rule.label} found every backend down",
                    f"{rule.label} matched client {client}, and {', '.join(sorted(shared))} "
                    "are down, disabled or drained",
                    reply_code=constants.CONNECTION_FORCED,
                )
        return None, None


#: The weights of a farm whose members all weigh 1 (a name missing from it weighs 1).
_NO_WEIGHTS: Mapping[str, int] = MappingProxyType({})


def _no_mapping(vhost: str) -> str:
    return f"No known broker mapping for vhost {vhost}"


def _refused(
    vhost: str, mapping: str, target: Target, why: str, text: str | None = None
) -> NoRoute:
    """The refusal of ``vhost``, routed by ``mapping`` to ``target``, which ``why``
    (built only when refusing: the texts cost more than a decision)."""
    kind, name = target
    if mapping == DEFAULT_MAPPING:
        subject = f"vhost {vhost} is not mapped and the default farm {name}"
    elif mapping != vhost:
        subject = f"vhost {vhost} matches {mapping!r}, mapped to {kind} {name}, which"
    else:
        subject = f"vhost {vhost} is mapped to {kind} {name}, which"
    return NoRoute(_no_mapping(vhost) if text is None else text, f"{subject} {why}")


def _all_disabled(vhost: str) -> str:
    return f"No enabled broker for vhost {vhost}: its backends are disabled"
