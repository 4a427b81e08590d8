"""How a farm orders its members for one connection: partition policies and selectors.

A farm's members are first *partitioned* into priority groups: one partition with
every member, in the farm's member order, then each of the farm's partition policies
in turn (``partition``). A *selector* then turns the partitions into the ordered list
of backends one connection tries (``SELECTORS``).

Everything here is a pure function except ``Markers``, the round-robin positions,
which is the only mutable state of the routing layer. It lives beside a farm's
partition layout in the routing table (``model.FarmLayout``), is carried from one
snapshot to the next while that layout stands, and is replaced by a fresh one (all
positions 0) whenever the farm is (re)partitioned: FARM ADD, FARM PARTITION,
DATACENTER SET. Sessions run on one trio thread, so advancing it needs no lock.

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
#: A selector: (partitions, their markers) → the ordered attempts for one connection.
Selector: TypeAlias = "Callable[[Partitions, Markers], tuple[Backend, ...]]"


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
    """
    snapshot = markers.snapshot()
    sizes = [len(members) for members in partitions]
    attempts: list[Backend] = []
    retry = 0
    while (pick := round_robin_pick(sizes, snapshot, retry)) is not None:
        attempts.append(partitions[pick[0]][pick[1]])
        retry += 1
    for index in range(len(partitions)):
        markers.advance(index)
    return tuple(attempts)


SELECTORS: Final[Mapping[str, Selector]] = MappingProxyType({"round-robin": round_robin})
