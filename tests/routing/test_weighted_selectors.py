"""weighted-round-robin and least-connections over thousands of simulated choices (no
sockets): shares follow the weights, smooth WRR never bursts, FARM WEIGHT applies to the
next choice, weight 0 drains, least-connections follows live sessions and rotates ties."""

from __future__ import annotations

import itertools
from collections import Counter

import attrs
import pytest

from amqprouter.routing import Backend, Farm, NoRoute, RoutingTable
from amqprouter.routing.model import Route
from amqprouter.routing.selectors import FarmState, smooth_pick


def backend(name: str, datacenter: str = "dc1") -> Backend:
    return Backend(name, datacenter, f"{name}.example", 5672)


NAMES = ("a", "b", "c")


def farm_table(
    selector: str, weights: tuple[int, ...], names: tuple[str, ...] = NAMES
) -> RoutingTable:
    farm = Farm("f", selector, names, weights=weights)
    return RoutingTable(
        backends={n: backend(n) for n in names}, farms={"f": farm}, mappings={"v": ("farm", "f")}
    )


def choices(table: RoutingTable, count: int, *, release: bool = True) -> list[str]:
    picks = []
    for _ in range(count):
        route = table.route("v", "10.0.0.1")
        picks.append(route.candidates[0].name)
        if release:
            route.release()
    return picks


def test_smooth_pick_is_nginx_sequence() -> None:
    # nginx's own example: weights 5, 1, 1 give a a b a c a a.
    members = [backend(n) for n in NAMES]
    current: dict[str, int] = {}
    weights = {"a": 5, "b": 1, "c": 1}
    sequence = [smooth_pick(members, weights, current)[0].name for _ in range(7)]
    assert sequence == ["a", "a", "b", "a", "c", "a", "a"]
    assert current == {"a": 0, "b": 0, "c": 0}  # back where it started


@pytest.mark.parametrize("weights", [(5, 1, 1), (3, 2, 1), (1, 1, 1), (10, 0, 1), (256, 1, 7)])
def test_weighted_round_robin_shares_are_exact_per_cycle(weights: tuple[int, ...]) -> None:
    table = farm_table("weighted-round-robin", weights)
    total = sum(weights)
    picks = choices(table, total * 40)
    assert Counter(picks) == {n: w * 40 for n, w in zip(NAMES, weights, strict=True) if w}
    # Every window of one cycle already holds each member exactly its weight.
    for start in range(0, len(picks) - total, 7):
        window = Counter(picks[start : start + total])
        assert window == {n: w for n, w in zip(NAMES, weights, strict=True) if w}


def _longest_run(picks: list[str]) -> int:
    longest = run = 1
    for previous, pick in itertools.pairwise(picks):
        run = run + 1 if pick == previous else 1
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize(
    ("weights", "longest"),
    # Plain (bursty) WRR sends each member its whole weight in a row: 5, 3, 10.
    [((5, 1, 1), 4), ((3, 2, 1), 2), ((1, 1, 1), 1), ((10, 1, 1), 7)],
)
def test_weighted_round_robin_spreads_the_heavy_member(
    weights: tuple[int, ...], longest: int
) -> None:
    picks = choices(farm_table("weighted-round-robin", weights), sum(weights) * 500)
    # Runs of the heavy member across cycle boundaries included.
    assert _longest_run(picks) == longest
    # A light member comes back exactly every total/weight choices, never in a clump.
    total = sum(weights)
    positions = [i for i, pick in enumerate(picks) if pick == "c"]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert gaps == {total // weights[2]}


def test_the_rest_of_the_list_is_every_other_member_once() -> None:
    table = farm_table("weighted-round-robin", (5, 1, 1))
    for _ in range(50):
        route = table.route("v")
        assert sorted(b.name for b in route.candidates) == ["a", "b", "c"]
        route.release()


def test_farm_weight_applies_from_the_next_choice_and_keeps_the_state() -> None:
    table = farm_table("weighted-round-robin", (1, 1, 1))
    choices(table, 3000)
    farm = table.farms["f"]
    heavier = attrs.evolve(table, farms={"f": attrs.evolve(farm, weights=(8, 1, 1))})
    assert heavier.layouts["f"] is table.layouts["f"]  # the selector's memory stays
    assert Counter(choices(heavier, 10_000)) == {"a": 8000, "b": 1000, "c": 1000}


def test_weight_zero_drains_a_member_and_all_zero_refuses() -> None:
    table = farm_table("weighted-round-robin", (1, 0, 1))
    assert set(choices(table, 1000)) == {"a", "c"}
    route = table.route("v")
    assert "b" not in {b.name for b in route.candidates}  # not even for failover
    drained = farm_table("weighted-round-robin", (0, 0, 0))
    with pytest.raises(NoRoute) as caught:
        drained.route("v")
    assert "disabled or drained" in caught.value.detail


def test_down_members_go_last_and_the_others_keep_their_shares() -> None:
    table = farm_table("weighted-round-robin", (3, 1, 1))
    picks = []
    for _ in range(4000):
        route = table.route("v", None, down={"a"})
        assert route.candidates[-1].name == "a"
        picks.append(route.candidates[0].name)
        route.release()
    assert Counter(picks) == {"b": 2000, "c": 2000}


def test_partitions_each_rotate_by_weight() -> None:
    names = ("a", "b", "c", "d")
    backends = {
        "a": backend("a"),
        "b": backend("b"),
        "c": backend("c", "dc2"),
        "d": backend("d", "dc2"),
    }
    farm = Farm("f", "weighted-round-robin", names, ("datacenter-affinity",), weights=(3, 1, 1, 2))
    table = RoutingTable(
        backends=backends, farms={"f": farm}, mappings={"v": ("farm", "f")}, datacenter="dc1"
    )
    firsts: Counter[str] = Counter()
    thirds: Counter[str] = Counter()
    for _ in range(3000):
        route = table.route("v")
        firsts[route.candidates[0].name] += 1
        thirds[route.candidates[2].name] += 1
        route.release()
    assert firsts == {"a": 2250, "b": 750}
    assert thirds == {"c": 1000, "d": 2000}  # the remote partition rotates too


# -- least-connections ------------------------------------------------------------------


def test_least_connections_without_sessions_ending_follows_the_weights() -> None:
    table = farm_table("least-connections", (3, 1, 1))
    picks = choices(table, 5000, release=False)  # every session stays
    assert Counter(picks) == {"a": 3000, "b": 1000, "c": 1000}
    assert dict(table.load) == {"a": 3000, "b": 1000, "c": 1000}


def test_least_connections_ties_take_turns() -> None:
    table = farm_table("least-connections", (1, 1, 1))
    # Sessions that end at once: every choice is a tie, so it is plain round-robin.
    assert choices(table, 9) == ["a", "b", "c"] * 3


def test_least_connections_follows_live_sessions() -> None:
    table = farm_table("least-connections", (1, 1, 1))
    held = [table.route("v") for _ in range(30)]  # 10 each
    for route in held:
        if route.candidates[0].name == "a":
            route.release()
    assert table.load.get("a") == 0
    # a has none left: the next 10 go to a, then the three tie again.
    picks = choices(table, 10, release=False)
    assert picks == ["a"] * 10
    assert Counter(choices(table, 3000, release=False)) == {"a": 1000, "b": 1000, "c": 1000}


def test_least_connections_counts_where_a_session_landed() -> None:
    table = farm_table("least-connections", (1, 1, 1))
    route = table.route("v")
    first, second = route.candidates[0], route.candidates[1]
    assert table.load.get(first.name) == 1  # counted from the choice, before the connect
    route.landed(second)  # failover
    assert table.load.get(first.name) == 0 and table.load.get(second.name) == 1
    route.release()
    route.release()  # once only
    assert dict(table.load) == {}


def test_least_connections_random_session_lengths_stay_proportional() -> None:
    import random

    rng = random.Random(7)
    table = farm_table("least-connections", (4, 2, 1))
    live: list[Route] = []
    landed: Counter[str] = Counter()
    for _ in range(20_000):
        route = table.route("v")
        landed[route.candidates[0].name] += 1
        live.append(route)
        if len(live) > 70:
            live.pop(rng.randrange(len(live))).release()
    # Shares of new sessions within 5% of 4:2:1.
    total = sum(landed.values())
    for name, weight in zip(NAMES, (4, 2, 1), strict=True):
        assert abs(landed[name] / total - weight / 7) < 0.05, landed


def test_farm_state_is_fresh_per_layout() -> None:
    state = FarmState(2)
    assert state.markers.snapshot() == (0, 0) and state.current == {} and state.last == [None, None]
