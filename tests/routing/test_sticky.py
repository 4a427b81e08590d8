"""Sticky clients without sockets: a client keeps its member while it is a healthy
candidate and for the timeout after its last session; the table's bound and records."""

from __future__ import annotations

from collections import Counter

import attrs
import pytest

from amqprouter.routing import Backend, Farm, Route, RoutingTable
from amqprouter.routing.sticky import StickyTable

NAMES = ("a", "b", "c")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sticky_table(
    clock: Clock, seconds: float | None = 60.0, selector: str = "round-robin"
) -> RoutingTable:
    return RoutingTable(
        backends={n: Backend(n, "dc", f"{n}.example", 5672) for n in NAMES},
        farms={"f": Farm("f", selector, NAMES, sticky=seconds)},
        mappings={"v": ("farm", "f")},
        sticky=StickyTable(clock),
    )


def session(
    table: RoutingTable, client: str, down: frozenset[str] = frozenset()
) -> tuple[str, Route]:
    route = table.route("v", client, down)
    route.landed(route.candidates[0])
    return route.candidates[0].name, route


def test_a_client_keeps_its_member_and_others_rotate() -> None:
    clock = Clock()
    table = sticky_table(clock)
    first, _held = session(table, "10.0.0.1")
    for _ in range(10):
        name, route = session(table, "10.0.0.1")
        assert name == first
        route.release()
    # Other clients are spread by the selector as usual.
    assert len({session(table, f"10.0.1.{i}")[0] for i in range(6)}) == 3


def test_the_rest_of_the_list_is_the_failover_order() -> None:
    table = sticky_table(Clock())
    name, _route = session(table, "10.0.0.1")
    route = table.route("v", "10.0.0.1", frozenset({"b"} - {name}))
    assert route.candidates[0].name == name
    assert sorted(b.name for b in route.candidates) == sorted(NAMES)


def test_the_entry_lasts_the_timeout_after_the_last_session_ends() -> None:
    clock = Clock()
    table = sticky_table(clock, 60)
    first, one = session(table, "10.0.0.1")
    _same, two = session(table, "10.0.0.1")
    clock.now += 1000  # sessions live: no expiry
    assert table.sticky.member("f", "10.0.0.1") == first
    one.release()
    clock.now += 1000
    assert table.sticky.member("f", "10.0.0.1") == first  # one still live
    two.release()
    clock.now += 59
    assert table.sticky.member("f", "10.0.0.1") == first
    clock.now += 2
    assert table.sticky.member("f", "10.0.0.1") is None


@pytest.mark.parametrize("how", ["down", "disabled", "drained"])
def test_a_member_that_cannot_be_chosen_is_not_kept_and_the_entry_moves(how: str) -> None:
    clock = Clock()
    table = sticky_table(clock, selector="weighted-round-robin")
    first, route = session(table, "10.0.0.1")
    route.release()
    down: frozenset[str] = frozenset()
    if how == "down":
        down = frozenset({first})
    elif how == "disabled":
        table = attrs.evolve(table, disabled={first})
    else:
        farm = table.farms["f"]
        weights = tuple(0 if n == first else 1 for n in NAMES)
        table = attrs.evolve(table, farms={"f": attrs.evolve(farm, weights=weights)})
    moved, _route = session(table, "10.0.0.1", down)
    assert moved != first
    assert table.sticky.member("f", "10.0.0.1") == moved


def test_failover_moves_the_entry_to_where_the_session_landed() -> None:
    table = sticky_table(Clock())
    route = table.route("v", "10.0.0.1")
    route.landed(route.candidates[1])
    assert table.sticky.member("f", "10.0.0.1") == route.candidates[1].name


def test_off_uses_no_entry_and_on_again_finds_the_live_ones() -> None:
    clock = Clock()
    table = sticky_table(clock)
    first, _route = session(table, "10.0.0.1")
    off = attrs.evolve(table, farms={"f": attrs.evolve(table.farms["f"], sticky=None)})
    assert Counter(session(off, "10.0.0.1")[0] for _ in range(6)) == {"a": 2, "b": 2, "c": 2}
    assert session(table, "10.0.0.1")[0] == first


def test_no_client_address_no_stickiness() -> None:
    table = sticky_table(Clock())
    route = table.route("v", None)
    route.landed(route.candidates[0])
    assert len(table.sticky) == 0


def test_the_table_is_bounded() -> None:
    clock = Clock()
    sticky = StickyTable(clock, max_entries=3)
    for index in range(3):
        assert sticky.attach("f", f"c{index}", "a", 10)
    assert not sticky.attach("f", "c9", "a", 10)  # full of live entries: not remembered
    sticky.detach("f", "c0")
    clock.now += 11
    assert sticky.attach("f", "c9", "a", 10)  # the expired one was swept for it
    assert len(sticky) == 3


def test_export_and_restore_keep_the_remaining_time() -> None:
    clock = Clock()
    sticky = StickyTable(clock)
    sticky.attach("f", "10.0.0.1", "a", 60)  # live: as if it ended now
    sticky.attach("f", "10.0.0.2", "b", 60)
    sticky.detach("f", "10.0.0.2")
    clock.now += 20
    records = sticky.export(wall_now=5000.0)
    assert sorted((r["client"], r["backend"], r["expires"]) for r in records) == [
        ("10.0.0.1", "a", 5060.0),
        ("10.0.0.2", "b", 5040.0),
    ]
    restored = StickyTable(Clock())
    assert restored.restore(records, wall_now=5030.0) == 2
    assert restored.member("f", "10.0.0.2") == "b"
    assert restored.restore(records, wall_now=5050.0) == 1  # one had expired by then
    with pytest.raises(ValueError, match="not a sticky record"):
        restored.restore([{"farm": "f"}])
