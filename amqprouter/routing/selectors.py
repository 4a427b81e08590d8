"""How a farm orders its members for one connection: partition policies and selectors.

A farm's members are first *partitioned* into priority groups: one partition with
every member, in the farm's member order, then each of the farm's partition policies
in turn (``partition``). A *selector* then turns the partitions into the ordered list
of backends one connection tries (``SELECTORS``): every member once, the higher
partitions first, each partition in the selector's order. The first of the list is
the choice; the rest is the failover order.

Everything here is a pure function except ``FarmState`` (the round-robin ``Markers``,
the smooth weighted round-robin's current weights, least-connections' last pick),
the selectors' memory. It lives beside a farm's partition layout in the routing
table (``model.FarmLayout``), is carried from one snapshot to the next while that
layout stands (FARM WEIGHT keeps it: a weight applies from the next choice on), and
is replaced by a fresh one whenever the farm is (re)partitioned: FARM ADD, FARM
PARTITION, DATACENTER SET. Sessions run on one trio thread, so it needs no lock.

The three selectors:

* ``round-robin`` (amqpprox's, below).
* ``weighted-round-robin``: nginx's *smooth* weighted round-robin. Each member keeps a
  current weight; for one choice every eligible member's current weight grows by its
  weight, the largest is chosen (the first in member order on a tie) and loses the
  sum of the weights. Weights 5, 1, 1 give ``a a b a c a a``, never five ``a`` in a
  row; over any run of ``sum(weights)`` choices each member gets exactly its weight.
  The rest of the list is the other members by current weight, largest first.
* ``least-connections``: the members by live sessions (``load``, counted per backend by
  ``load.BackendLoad``) per unit of weight, ``(sessions + 1) / weight`` as HAProxy's
  leastconn counts them, fewest first; members that tie are taken round-robin (the one
  after the last chosen, in member order, goes first).

Weights are 1..256 (HAProxy's range; 0 is a drained member, which ``RoutingTable``
leaves out before a selector sees the partitions), and a selector is only given
members that may be chosen: the model removes disabled, drained and rule-excluded
members, and calls a selector once for the healthy members and lists the ones marked
down after them.

The round-robin contract is amqpprox's (RobinBackendSelector): one marker per
partition; a connection takes a snapshot of the markers; its r-th attempt walks the
partitions, skipping a partition of size ``n <= r`` (``r -= n``), else picks
``(snapshot[i] + r) % n`` (``round_robin_pick``). So a connection never tries a
backend twice, exhausts higher partitions first, and each new connection starts one
position further.

One difference, because ``RoutingTable.candidates`` returns the whole attempt list at
once instead of one attempt at a time: amqpprox advances the live marker of a
partition once per *attempt* it serves, so a connection that fails over inside a
partition moves that partition's marker by two or more. Here each connection moves
the marker of *every* partition by exactly one (``round_robin``). Advancing once per
listed attempt would move a partition of n members by n, back to the same start, and
advancing only the partitions actually tried is unknowable up front. With every
member up both give the same rotation; when a whole higher partition is down, the
lower one still rotates one position per connection, as in amqpprox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from amqprouter.routing.model import Backend

#: Priority groups of backends, highest priority first. None is empty in a farm
#: layout; a selector must still accept empty ones (``RoutingTable.candidates`` empties
#: the partitions of members that are down) and skip them.
Partitions: TypeAlias = "tuple[tuple[Backend, ...], ...]"
#: A partition policy: (partitions, the router's datacenter) → partitions.
PartitionPolicy: TypeAlias = "Callable[[Partitions, str], Partitions]"
#: A selector: (partitions, the farm's state, weights by member name, live sessions by
#: backend name) → the ordered attempts for one connection. A name missing from
#: ``weights`` weighs 1; one missing from the load has no session.
Selector: TypeAlias = (
    "Callable[[Partitions, FarmState, Mapping[str, int], Mapping[str, int]], tuple[Backend, ...]]"
)

#: The weights a member may have (FARM ADD m*w, FARM WEIGHT): HAProxy's range; 0 drains.
MAX_WEIGHT: Final = 256


class Markers:
    """One round-robin position per partition of one farm layout (mutable, shared).

    Carried unchanged into each new routing snapshot while the farm's partition
    layout stands; a (re)partitioned farm gets a new ``Markers`` (all positions 0).
    Compared by identity, so routing tables that differ only in markers are equal.
    """

    __slots__ = ("_positions",)

    def __init__(self, count: int) -> None:
        self._positions = [0] * count

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self._positions)

    def advance(self, partition: int) -> None:
        self._positions[partition] += 1

    def __len__(self) -> int:
        return len(self._positions)

    def __repr__(self) -> str:
        return f"Markers({self._positions!r})"


class FarmState:
    """A farm layout's selector memory (mutable, shared by the snapshots that keep the
    layout): round-robin markers, smooth-WRR current weights by member name, and the
    member least-connections chose last in each partition."""

    __slots__ = ("current", "last", "markers")

    def __init__(self, partitions: int) -> None:
        self.markers = Markers(partitions)
        self.current: dict[str, int] = {}
        self.last: list[str | None] = [None] * partitions


# --------------------------------------------------------------------------- #
# partition policies
# --------------------------------------------------------------------------- #


def datacenter_affinity(partitions: Partitions, datacenter: str) -> Partitions:
    """Split each partition into [members in ``datacenter``], [the others]; drop empties."""
    result: list[tuple[Backend, ...]] = []
    for members in partitions:
        local = tuple(backend for backend in members if backend.datacenter == datacenter)
        remote = tuple(backend for backend in members if backend.datacenter != datacenter)
        result += [group for group in (local, remote) if group]
    return tuple(result)


POLICIES: Final[Mapping[str, PartitionPolicy]] = MappingProxyType(
    {"datacenter-affinity": datacenter_affinity}
)


def partition(members: Sequence[Backend], policies: Sequence[str], datacenter: str) -> Partitions:
    """One partition of ``members`` (in their order), then each policy in turn.

    An empty farm has no partitions. Raises KeyError for an unknown policy name
    (the FARM PARTITION command rejects those when it is given).
    """
    partitions: Partitions = (tuple(members),) if members else ()
    for name in policies:
        partitions = POLICIES[name](partitions, datacenter)
    return partitions


# --------------------------------------------------------------------------- #
# selectors
# --------------------------------------------------------------------------- #


def round_robin_pick(
    sizes: Sequence[int], snapshot: Sequence[int], retry: int
) -> tuple[int, int] | None:
    """amqpprox's arithmetic: (partition, index in it) of attempt ``retry``, or None.

    ``sizes`` are the partition sizes, ``snapshot`` the markers when the connection
    started. None means every member has been tried.
    """
    for index, size in enumerate(sizes):
        if retry >= size:
            retry -= size
            continue
        return index, (snapshot[index] + retry) % size
    return None


def round_robin(partitions: Partitions, markers: Markers) -> tuple[Backend, ...]:
    """Every member once, higher partitions first, each starting at its marker.

    Advances the marker of every partition by one: the next connection starts one
    position further in each (see the module docstring for why not per attempt).
    The same list ``round_robin_pick`` gives attempt by attempt, built a partition at a
    time (a routed handshake pays for this once).
    """
    positions = markers._positions
    attempts: list[Backend] = []
    for index, members in enumerate(partitions):
        size = len(members)
        if size:
            start = positions[index] % size
            attempts += members[start:]
            attempts += members[:start]
        positions[index] += 1
    return tuple(attempts)


def _round_robin(
    partitions: Partitions, state: FarmState, weights: Mapping[str, int], load: Mapping[str, int]
) -> tuple[Backend, ...]:
    return round_robin(partitions, state.markers)


def smooth_pick(
    members: Sequence[Backend], weights: Mapping[str, int], current: dict[str, int]
) -> list[Backend]:
    """nginx's smooth weighted round-robin over ``members``: the chosen one first, then
    the others by current weight (largest first, member order on ties). Commits the
    choice to ``current``. ``members`` is not empty; every weight is positive."""
    total = 0
    best: Backend = members[0]
    best_current = -(1 << 62)
    for backend in members:
        weight = weights.get(backend.name, 1)
        total += weight
        value = current.get(backend.name, 0) + weight
        current[backend.name] = value
        if value > best_current:
            best, best_current = backend, value
    current[best.name] = best_current - total
    rest = [backend for backend in members if backend is not best]
    rest.sort(key=lambda backend: -current[backend.name])
    return [best, *rest]


def weighted_round_robin(
    partitions: Partitions, state: FarmState, weights: Mapping[str, int], load: Mapping[str, int]
) -> tuple[Backend, ...]:
    """Smooth weighted round-robin in each partition, higher partitions first.

    Every partition commits one choice per connection (as ``round_robin`` advances every
    marker), so a lower partition rotates evenly when the ones above are down.
    """
    attempts: list[Backend] = []
    for members in partitions:
        if members:
            attempts += smooth_pick(members, weights, state.current)
    return tuple(attempts)


def least_connections(
    partitions: Partitions, state: FarmState, weights: Mapping[str, int], load: Mapping[str, int]
) -> tuple[Backend, ...]:
    """Fewest live sessions per unit of weight first, ties round-robin, per partition."""
    attempts: list[Backend] = []
    for index, members in enumerate(partitions):
        if not members:
            continue
        # Start after the last choice, so members that tie take turns.
        start = 0
        last = state.last[index] if index < len(state.last) else None
        if last is not None:
            for position, backend in enumerate(members):
                if backend.name == last:
                    start = position + 1
                    break
        rotated = [*members[start:], *members[:start]]
        # Stable: equal scores keep the rotated order.
        rotated.sort(key=lambda b: (load.get(b.name, 0) + 1) / weights.get(b.name, 1))
        if index < len(state.last):
            state.last[index] = rotated[0].name
        attempts += rotated
    return tuple(attempts)


SELECTORS: Final[Mapping[str, Selector]] = MappingProxyType(
    {
        "round-robin": _round_robin,
        "weighted-round-robin": weighted_round_robin,
        "least-connections": least_connections,
    }
)
#: The selectors whose members have weights (FARM ADD m*w, FARM WEIGHT).
WEIGHTED: Final = frozenset({"weighted-round-robin", "least-connections"})
