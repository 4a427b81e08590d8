"""RoutingTable: candidates for a vhost, refusals, and marker bookkeeping."""

from __future__ import annotations

import attrs
import pytest

from amqprouter.routing import Backend, Farm, NoRoute, RoutingTable
from amqprouter.routing.model import FarmLayout


def backend(name: str, datacenter: str = "dc1") -> Backend:
    return Backend(name, datacenter, f"{name}.example", 5672)


A, B = backend("a"), backend("b", "dc2")


def table(**kwargs: object) -> RoutingTable:
    defaults: dict[str, object] = {
        "backends": {"a": A, "b": B},
        "farms": {"f": Farm("f", "round-robin", ("a", "b"))},
    }
    return RoutingTable(**{**defaults, **kwargs})  # type: ignore[arg-type]


def no_route(routing: RoutingTable, vhost: str) -> NoRoute:
    with pytest.raises(NoRoute) as info:
        routing.candidates(vhost)
    assert str(info.value) == f"No known broker mapping for vhost {vhost}"
    assert info.value.text == str(info.value)
    return info.value


def test_backend_connect_host() -> None:
    assert Backend("s", "dc", "host.example", 1, dns=False, ip="10.0.0.1").connect_host == (
        "10.0.0.1"
    )
    assert Backend("d", "dc", "host.example", 1, dns=True).connect_host == "host.example"
    assert Backend("s", "dc", "host.example", 1, dns=False).connect_host == "host.example"
    assert A.label == "a (a.example:5672)"


def test_empty_table_routes_nothing() -> None:
    error = no_route(RoutingTable(), "/")
    assert error.detail == "vhost / is not mapped and there is no default farm"


def test_single() -> None:
    routing = RoutingTable.single(A)
    assert routing.candidates("any") == (A,)
    assert routing.candidates("/") == (A,)
    assert routing.default_farm == "default"
    assert routing.farms["default"] == Farm("default", "round-robin", ("a",))


def test_direct_backend_mapping_gives_exactly_that_backend() -> None:
    routing = table(mappings={"v": ("backend", "b")})
    assert routing.candidates("v") == (B,)
    assert routing.candidates("v") == (B,)


def test_farm_mapping_rotates() -> None:
    routing = table(mappings={"v": ("farm", "f")})
    assert routing.candidates("v") == (A, B)
    assert routing.candidates("v") == (B, A)
    assert routing.candidates("v") == (A, B)


def test_default_farm_serves_unmapped_vhosts() -> None:
    routing = table(default_farm="f", mappings={"v": ("backend", "a")})
    assert routing.candidates("v") == (A,)
    assert routing.candidates("other") == (A, B)


def test_mapping_to_missing_backend() -> None:
    error = no_route(table(mappings={"v": ("backend", "nope")}), "v")
    assert error.detail == "vhost v is mapped to backend nope, which does not exist"


def test_mapping_to_missing_farm() -> None:
    error = no_route(table(mappings={"v": ("farm", "nope")}), "v")
    assert error.detail == "vhost v is mapped to farm nope, which does not exist"


def test_missing_default_farm() -> None:
    error = no_route(table(default_farm="nope"), "v")
    assert error.detail == "vhost v is not mapped and the default farm nope does not exist"


def test_empty_farm() -> None:
    routing = table(farms={"e": Farm("e")}, mappings={"v": ("farm", "e")}, default_farm="e")
    assert no_route(routing, "v").detail == "vhost v is mapped to farm e, which has no backends"
    assert no_route(routing, "w").detail == (
        "vhost w is not mapped and the default farm e has no backends"
    )


def test_unknown_selector_in_a_hand_built_farm() -> None:
    routing = table(farms={"f": Farm("f", "random", ("a",))}, mappings={"v": ("farm", "f")})
    assert no_route(routing, "v").detail == (
        "vhost v is mapped to farm f, which has an unknown selector 'random'"
    )


def test_mappings_are_read_only() -> None:
    routing = table()
    with pytest.raises(TypeError):
        routing.backends["c"] = A  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        routing.datacenter = "x"  # type: ignore[misc]


def test_layout_partitions_follow_datacenter() -> None:
    farm = Farm("f", "round-robin", ("b", "a"), ("datacenter-affinity",))
    routing = table(farms={"f": farm}, datacenter="dc1", default_farm="f")
    assert routing.layouts["f"].partitions == ((A,), (B,))
    assert routing.candidates("v") == (A, B)
    assert attrs.evolve(routing, datacenter="dc2").candidates("v") == (B, A)


def test_evolved_table_keeps_markers_of_unchanged_farms() -> None:
    routing = table(default_farm="f")
    layout = routing.layouts["f"]
    assert isinstance(layout, FarmLayout)
    routing.candidates("v")
    later = attrs.evolve(routing, mappings={"w": ("backend", "a")})
    assert later.layouts["f"] is layout
    assert later.candidates("v") == (B, A)
    # A layout computed from something else is rebuilt, markers from 0.
    moved = attrs.evolve(later, datacenter="dc9")
    assert moved.layouts["f"] is not layout
    assert moved.layouts["f"].markers.snapshot() == (0,)


def test_markers_do_not_take_part_in_equality() -> None:
    one, two = table(default_farm="f"), table(default_farm="f")
    one.candidates("v")
    assert one == two


# --------------------------------------------------------------------------- #
# candidates with members marked down (routing.health)
# --------------------------------------------------------------------------- #


def _farm_of(*names: str, policies: tuple[str, ...] = ()) -> RoutingTable:
    backends = {name: backend(name, "dc1" if name < "c" else "dc2") for name in names}
    farm = Farm("f", "round-robin", names, policies)
    return RoutingTable(backends=backends, farms={"f": farm}, default_farm="f", datacenter="dc1")


def _names(candidates: tuple[Backend, ...]) -> str:
    return "".join(b.name for b in candidates)


def test_down_members_go_last_and_the_healthy_ones_share_the_rotation() -> None:
    routing = _farm_of("a", "b", "c")
    orders = [_names(routing.candidates("v", down={"b"})) for _ in range(4)]
    # a and c alternate (not c twice for every a, as skipping b's turn would give).
    assert orders == ["acb", "cab", "acb", "cab"]


def test_down_members_keep_farm_order_among_themselves() -> None:
    routing = _farm_of("a", "b", "c", "d")
    assert _names(routing.candidates("v", down={"d", "b"})) == "acbd"
    assert _names(routing.candidates("v", down={"d", "b"})) == "cabd"


def test_every_member_down_is_the_plain_rotation() -> None:
    routing = _farm_of("a", "b")
    assert [_names(routing.candidates("v", down={"a", "b"})) for _ in range(3)] == [
        "ab",
        "ba",
        "ab",
    ]


def test_no_member_down_is_the_plain_rotation() -> None:
    routing = _farm_of("a", "b")
    assert [_names(routing.candidates("v", down={"x"})) for _ in range(2)] == ["ab", "ba"]


def test_a_partition_whose_members_are_all_down_is_skipped() -> None:
    # dc1 (a, b) first, dc2 (c, d) after; with dc1 all down the dc2 members rotate.
    routing = _farm_of("a", "b", "c", "d", policies=("datacenter-affinity",))
    assert _names(routing.candidates("v")) == "abcd"
    assert _names(routing.candidates("v", down={"a", "b"})) == "dcab"
    assert _names(routing.candidates("v", down={"a", "b"})) == "cdab"
    assert _names(routing.candidates("v", down={"a"})) == "bdca"


def test_a_direct_mapping_ignores_health() -> None:
    routing = table(mappings={"v": ("backend", "a")})
    assert routing.candidates("v", down={"a"}) == (A,)
