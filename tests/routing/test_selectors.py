"""Partition policies and the round-robin selector, as pure functions."""

from __future__ import annotations

import pytest

from amqprouter.routing.model import Backend
from amqprouter.routing.selectors import (
    POLICIES,
    SELECTORS,
    Markers,
    datacenter_affinity,
    partition,
    round_robin,
    round_robin_pick,
)


def backend(name: str, datacenter: str = "dc1") -> Backend:
    return Backend(name, datacenter, f"{name}.example", 5672)


A, B, C = backend("a", "dc1"), backend("b", "dc2"), backend("c", "dc1")
D = backend("d", "dc3")


def names(backends: tuple[Backend, ...]) -> list[str]:
    return [b.name for b in backends]


def test_registries() -> None:
    assert set(SELECTORS) == {"round-robin", "weighted-round-robin", "least-connections"}
    assert set(POLICIES) == {"datacenter-affinity"}


def test_partition_without_policies_keeps_member_order() -> None:
    assert partition([C, A, B], (), "dc1") == ((C, A, B),)


def test_partition_of_nothing_is_empty() -> None:
    assert partition([], ("datacenter-affinity",), "dc1") == ()


def test_datacenter_affinity_puts_local_first() -> None:
    assert partition([A, B, C, D], ("datacenter-affinity",), "dc1") == ((A, C), (B, D))


def test_datacenter_affinity_drops_empty_partitions() -> None:
    assert datacenter_affinity(((A, C),), "dc1") == ((A, C),)
    assert datacenter_affinity(((A, C),), "elsewhere") == ((A, C),)
    assert datacenter_affinity((), "dc1") == ()


def test_datacenter_affinity_splits_every_partition_in_series() -> None:
    once = datacenter_affinity(((A, B), (C, D)), "dc1")
    assert once == ((A,), (B,), (C,), (D,))
    # Applying it again changes nothing: each partition is already one-sided.
    assert partition([A, B, C, D], ("datacenter-affinity",) * 2, "dc1") == ((A, C), (B, D))


@pytest.mark.parametrize(
    ("sizes", "snapshot", "retry", "expected"),
    [
        ([3], [0], 0, (0, 0)),
        ([3], [0], 2, (0, 2)),
        ([3], [2], 1, (0, 0)),  # wraps around the partition
        ([3], [0], 3, None),  # exhausted
        ([2, 2], [1, 0], 0, (0, 1)),
        ([2, 2], [1, 0], 1, (0, 0)),
        ([2, 2], [1, 5], 2, (1, 1)),  # lower partition, from its own marker
        ([2, 2], [1, 5], 3, (1, 0)),
        ([2, 2], [1, 5], 4, None),
        ([], [], 0, None),
    ],
)
def test_round_robin_pick_is_the_reference_arithmetic(
    sizes: list[int], snapshot: list[int], retry: int, expected: tuple[int, int] | None
) -> None:
    assert round_robin_pick(sizes, snapshot, retry) == expected


def test_round_robin_rotates_per_connection_and_never_repeats() -> None:
    markers = Markers(1)
    partitions = ((A, B, C),)
    seen = [names(round_robin(partitions, markers)) for _ in range(4)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert markers.snapshot() == (4,)


def test_round_robin_exhausts_higher_partitions_first() -> None:
    markers = Markers(2)
    partitions = ((A, C), (B, D))
    first = names(round_robin(partitions, markers))
    second = names(round_robin(partitions, markers))
    assert first == ["a", "c", "b", "d"]
    # Both partitions move one position per connection.
    assert second == ["c", "a", "d", "b"]
    assert markers.snapshot() == (2, 2)


def test_markers() -> None:
    markers = Markers(3)
    assert len(markers) == 3
    assert markers.snapshot() == (0, 0, 0)
    markers.advance(1)
    assert markers.snapshot() == (0, 1, 0)
    assert repr(markers) == "Markers([0, 1, 0])"


@pytest.mark.parametrize("sizes", [(1,), (3,), (2, 3), (4, 0, 2), (1, 1, 1), (5, 2)])
def test_round_robin_lists_the_reference_arithmetics_attempts(sizes: tuple[int, ...]) -> None:
    partitions = tuple(
        tuple(backend(f"p{p}m{m}") for m in range(size)) for p, size in enumerate(sizes)
    )
    markers = Markers(len(partitions))
    for _ in range(12):
        snapshot = markers.snapshot()
        expected = []
        retry = 0
        while (pick := round_robin_pick(sizes, snapshot, retry)) is not None:
            expected.append(partitions[pick[0]][pick[1]])
            retry += 1
        assert round_robin(partitions, markers) == tuple(expected)
