"""Routing commands applied to snapshots: every reply, every error, markers, round trip.

Reply texts are asserted byte for byte against reference/amqpprox.md section 1
(including whether they end in a newline); ours (differences listed in
``control.routing_commands``) are marked as such.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from amqprouter.control import commands as c
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.control.routing_commands import (
    apply,
    backend_line,
    backend_print,
    config_commands,
)
from amqprouter.routing import Backend, Farm, RoutingTable

IPS = {"rabbit1.example": "10.0.0.1", "rabbit2.example": "10.0.0.2", "localhost": "127.0.0.1"}


def run(table: RoutingTable, command: c.Command) -> tuple[RoutingTable, str]:
    """``apply`` with BACKEND ADD resolved from IPS, as the controller would (and
    BACKEND PRINT without health information)."""
    if isinstance(command, c.BackendPrint):
        return table, backend_print(table)
    resolved = (
        IPS.get(command.host) if isinstance(command, c.BackendAdd) and not command.dns else None
    )
    return apply(table, command, resolved_ip=resolved)


def build(lines: Iterable[str], table: RoutingTable | None = None) -> RoutingTable:
    """Apply command lines that must all succeed silently."""
    table = RoutingTable() if table is None else table
    for line in lines:
        command = parse(line)
        assert isinstance(command, c.MutatingCommand), line
        table, reply = run(table, command)
        assert reply == "", (line, reply)
    return table


def reply(table: RoutingTable, line: str) -> str:
    command = parse(line)
    assert not isinstance(command, ParseError), line
    new, text = run(table, command)
    if text and isinstance(command, c.MutatingCommand):
        assert new is table, "a refused command must not change the table"
    return text


BASE = [
    "BACKEND ADD rabbit1 london-az1 rabbit1.example 5672",
    "BACKEND ADD_DNS rabbit2 london-az2 rabbit2.example 5673",
    "BACKEND ADD rabbit3 london-az1 localhost 5674",
]

# --------------------------------------------------------------------------- #
# BACKEND
# --------------------------------------------------------------------------- #


def test_backend_add_stores_resolved_ip() -> None:
    table = build(BASE)
    assert table.backends["rabbit1"] == Backend(
        "rabbit1", "london-az1", "rabbit1.example", 5672, dns=False, ip="10.0.0.1"
    )
    assert table.backends["rabbit1"].connect_host == "10.0.0.1"
    assert table.backends["rabbit2"] == Backend(
        "rabbit2", "london-az2", "rabbit2.example", 5673, dns=True, ip=None
    )
    assert table.backends["rabbit2"].connect_host == "rabbit2.example"
    rabbit3 = table.backends["rabbit3"]
    assert (rabbit3.send_proxy, rabbit3.tls) == (False, False)


def test_backend_add_needs_resolved_ip() -> None:
    with pytest.raises(ValueError, match="resolved_ip"):
        apply(RoutingTable(), c.BackendAdd("b", "dc", "h", 1))


def test_backend_print() -> None:
    # Sorted by name (ours); an ADD_DNS backend has an empty ip.
    table = build([*reversed(BASE), "BACKEND ADD_DNS alpha dc1 a.example 1"])
    assert reply(table, "BACKEND PRINT") == (
        "alpha (dc1): a.example :1\n"
        "rabbit1 (london-az1): rabbit1.example 10.0.0.1:5672\n"
        "rabbit2 (london-az2): rabbit2.example :5673\n"
        "rabbit3 (london-az1): localhost 127.0.0.1:5674\n"
    )
    assert reply(RoutingTable(), "BACKEND PRINT") == ""


def test_backend_line_proxy_only() -> None:
    backend = Backend("b", "dc", "h", 1, dns=False, ip="1.2.3.4", send_proxy=True)
    assert backend_line(backend) == "b (dc): h 1.2.3.4:1 PROXY PROTOCOL V1 ENABLED"


def test_backend_line_brackets_an_ipv6_address() -> None:
    backend = Backend("b", "dc", "::1", 5672, dns=False, ip="::1")
    assert backend_line(backend) == "b (dc): ::1 [::1]:5672"
    assert backend.label == "b ([::1]:5672)"


def test_backend_add_duplicate() -> None:
    table = build(BASE)
    assert reply(table, "BACKEND ADD rabbit1 dc9 localhost 1") == (
        "Failed to insert backend: 'rabbit1 (dc9): localhost 127.0.0.1:1', error code: 1\n"
    )
    assert reply(table, "BACKEND ADD_DNS rabbit2 dc9 other 2") == (
        "Failed to insert backend: 'rabbit2 (dc9): other :2', error code: 1\n"
    )
    # Same port on two DNS backends is fine (amqpprox #63/#65).
    build(["BACKEND ADD_DNS other london-az2 rabbit2.example 5673"], table)


def test_backend_delete() -> None:
    table = build(BASE)
    assert reply(table, "BACKEND DELETE nope") == "Delete failed to remove 'nope', rcode 1\n"
    after = build(["BACKEND DELETE rabbit2"], table)
    assert set(after.backends) == {"rabbit1", "rabbit3"}


def test_backend_delete_used_by_farms_is_refused() -> None:  # ours
    table = build(
        [
            *BASE,
            "FARM ADD zeta round-robin rabbit1",
            "FARM ADD alpha round-robin rabbit2 rabbit1",
            "FARM ADD other round-robin rabbit3",
        ]
    )
    assert reply(table, "BACKEND DELETE rabbit1") == (
        "Backend 'rabbit1' is used by farm(s) alpha, zeta; remove it from them first.\n"
    )
    # Free once no farm uses it.
    table = build(["FARM DELETE zeta", "FARM ADD alpha round-robin rabbit2"], table)
    build(["BACKEND DELETE rabbit1"], table)


def test_backend_delete_of_a_directly_mapped_backend_is_allowed() -> None:
    table = build([*BASE, "MAP BACKEND v rabbit1", "BACKEND DELETE rabbit1"])
    assert reply(table, "MAP PRINT") == '"v" => Backend:rabbit1\n'


# --------------------------------------------------------------------------- #
# FARM
# --------------------------------------------------------------------------- #


def test_farm_add_and_print() -> None:
    table = build([*BASE, "FARM ADD shared round-robin rabbit2 rabbit1 rabbit2"])
    # Members in insertion order (ours), a repeated member kept once.
    assert table.farms["shared"] == Farm("shared", "round-robin", ("rabbit2", "rabbit1"))
    table = build(["FARM ADD empty round-robin", "FARM ADD b-farm round-robin rabbit3"], table)
    # Sorted by name (ours); each member followed by a space; empty farms allowed (ours).
    assert reply(table, "FARM PRINT") == ("b-farm: rabbit3 \nempty: \nshared: rabbit2 rabbit1 \n")
    assert reply(RoutingTable(), "FARM PRINT") == ""


def test_farm_add_unknown_selector() -> None:
    table = build(BASE)
    assert reply(table, "FARM ADD f random rabbit1") == "Selector 'random' not found\n"
    # Selectors are case-sensitive.
    assert reply(table, "FARM ADD f Round-Robin rabbit1") == "Selector 'Round-Robin' not found\n"


def test_farm_add_missing_backends() -> None:
    table = build(BASE)
    assert reply(table, "FARM ADD f round-robin x rabbit1 y") == (
        "Backend 'x' not found\n"
        "Backend 'y' not found\n"
        "Farm not inserted due to at least one missing Backend\n"
    )


def test_farm_add_replaces_farm_and_policies() -> None:
    table = build([*BASE, "FARM ADD f round-robin rabbit1", "FARM PARTITION f datacenter-affinity"])
    assert table.farms["f"].policies == ("datacenter-affinity",)
    table = build(["FARM ADD f round-robin rabbit2"], table)
    assert table.farms["f"] == Farm("f", "round-robin", ("rabbit2",), ())


def test_farm_partition() -> None:
    table = build([*BASE, "FARM ADD f round-robin rabbit1"])
    assert reply(table, "FARM PARTITION f by-size") == "Partition policy 'by-size' not found\n"
    assert reply(table, "FARM PARTITION g datacenter-affinity") == "Farm 'g' not found\n"
    table = build(["FARM PARTITION f datacenter-affinity"] * 2, table)
    assert table.farms["f"].policies == ("datacenter-affinity", "datacenter-affinity")


def test_farm_delete() -> None:
    table = build([*BASE, "FARM ADD f round-robin rabbit1", "FARM DELETE f"])
    assert table.farms == {}
    # Deleting a farm that does not exist is silent.
    assert reply(table, "FARM DELETE nope") == ""


# --------------------------------------------------------------------------- #
# MAP
# --------------------------------------------------------------------------- #


def test_map_print() -> None:
    table = build(
        [
            "MAP FARM zz shared",
            "MAP BACKEND vhost-example rabbit1",
            "MAP BACKEND / rabbit2",
            "MAP FARM / other",  # replaces
        ]
    )
    assert reply(table, "MAP PRINT") == (
        '"/" => Farm:other\n"vhost-example" => Backend:rabbit1\n"zz" => Farm:shared\n'
    )
    # The default farm is printed last (ours).
    table = build(["MAP DEFAULT shared"], table)
    assert reply(table, "MAP PRINT").endswith('"zz" => Farm:shared\n(default) => Farm:shared\n')
    assert reply(build(["MAP DEFAULT d"]), "MAP PRINT") == "(default) => Farm:d\n"
    assert reply(RoutingTable(), "MAP PRINT") == ""


def test_map_unmap_and_remove_default() -> None:
    table = build(["MAP BACKEND a b", "MAP BACKEND c d", "MAP DEFAULT f", "MAP UNMAP a"])
    assert dict(table.mappings) == {"c": ("backend", "d")}
    table = build(["MAP UNMAP nope", "MAP REMOVE_DEFAULT", "MAP REMOVE_DEFAULT"], table)
    assert table.default_farm is None


def test_map_accepts_unknown_targets() -> None:
    table = build(["MAP BACKEND v nope", "MAP FARM w nope", "MAP DEFAULT nope"])
    assert dict(table.mappings) == {"v": ("backend", "nope"), "w": ("farm", "nope")}
    assert table.default_farm == "nope"


# --------------------------------------------------------------------------- #
# DATACENTER
# --------------------------------------------------------------------------- #


def test_datacenter() -> None:
    assert reply(RoutingTable(), "DATACENTER PRINT") == "\n"
    table = build(["DATACENTER SET london-az1"])
    assert reply(table, "DATACENTER PRINT") == "london-az1\n"
    assert build(["DATACENTER SET"], table).datacenter == ""


# --------------------------------------------------------------------------- #
# routing through the commands
# --------------------------------------------------------------------------- #

FARM = [*BASE, "FARM ADD shared round-robin rabbit1 rabbit2 rabbit3", "MAP DEFAULT shared"]


def order(table: RoutingTable, vhost: str = "v") -> list[str]:
    return [backend.name for backend in table.candidates(vhost)]


def test_round_robin_rotates_and_retries_never_repeat() -> None:
    table = build(FARM)
    assert order(table) == ["rabbit1", "rabbit2", "rabbit3"]
    assert order(table) == ["rabbit2", "rabbit3", "rabbit1"]
    assert order(table) == ["rabbit3", "rabbit1", "rabbit2"]
    assert order(table) == ["rabbit1", "rabbit2", "rabbit3"]


def test_datacenter_affinity_orders_local_first() -> None:
    table = build([*FARM, "FARM PARTITION shared datacenter-affinity", "DATACENTER SET london-az2"])
    assert order(table) == ["rabbit2", "rabbit1", "rabbit3"]
    assert order(table) == ["rabbit2", "rabbit3", "rabbit1"]
    table = build(["DATACENTER SET london-az1"], table)
    assert order(table) == ["rabbit1", "rabbit3", "rabbit2"]
    assert order(table) == ["rabbit3", "rabbit1", "rabbit2"]
    # Nobody local: one partition, in member order.
    table = build(["DATACENTER SET tokyo"], table)
    assert order(table) == ["rabbit1", "rabbit2", "rabbit3"]


def test_markers_survive_unrelated_commands() -> None:
    table = build(FARM)
    order(table)
    table = build(
        [
            "BACKEND ADD_DNS extra dc 1.example 1",
            "FARM ADD other round-robin extra",
            "FARM PARTITION other datacenter-affinity",
            "MAP FARM w other",
            "MAP BACKEND x extra",
            "MAP UNMAP x",
            "FARM DELETE other",
            "BACKEND DELETE extra",
        ],
        table,
    )
    for line in ("FARM PRINT", "MAP PRINT", "DATACENTER PRINT"):
        command = parse(line)
        assert isinstance(command, c.FarmPrint | c.MapPrint | c.DatacenterPrint)
        table, _ = apply(table, command)
    assert order(table) == ["rabbit2", "rabbit3", "rabbit1"]


@pytest.mark.parametrize(
    "line",
    [
        "FARM ADD shared round-robin rabbit1 rabbit2 rabbit3",  # same farm again
        "FARM PARTITION shared datacenter-affinity",
        "DATACENTER SET",  # the same (empty) datacenter
    ],
)
def test_markers_reset_on_repartition(line: str) -> None:
    table = build(FARM)
    order(table)
    order(table)
    table = build([line], table)
    assert order(table) == ["rabbit1", "rabbit2", "rabbit3"]


def test_repartitioning_one_farm_keeps_the_others_markers() -> None:
    table = build([*FARM, "FARM ADD second round-robin rabbit1 rabbit2", "MAP FARM s second"])
    order(table, "s")
    table = build(["FARM PARTITION shared datacenter-affinity"], table)
    assert order(table, "s") == ["rabbit2", "rabbit1"]


def test_snapshots_are_immutable() -> None:
    before = build([*FARM, "MAP BACKEND v rabbit1", "DATACENTER SET dc"])
    copy = build([*FARM, "MAP BACKEND v rabbit1", "DATACENTER SET dc"])
    lines = [
        "BACKEND ADD_DNS new dc n.example 1",
        "MAP UNMAP v",
        "FARM ADD shared round-robin rabbit2",
        "FARM PARTITION shared datacenter-affinity",
        "FARM ADD more round-robin",
        "FARM DELETE more",
        "MAP FARM w shared",
        "MAP DEFAULT other",
        "MAP REMOVE_DEFAULT",
        "DATACENTER SET elsewhere",
    ]
    table = before
    for line in lines:
        table = build([line], table)
    assert before == copy
    assert before.farms["shared"].members == ("rabbit1", "rabbit2", "rabbit3")
    assert before.candidates("v") == (before.backends["rabbit1"],)
    assert table != before


def test_non_routing_command_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        apply(RoutingTable(), c.Exit())


# --------------------------------------------------------------------------- #
# CONFIG PRINT
# --------------------------------------------------------------------------- #


def test_config_commands_of_empty_table() -> None:
    assert config_commands(RoutingTable()) == []


def test_config_commands_round_trip() -> None:
    table = build(
        [
            "DATACENTER SET london-az1",
            *BASE,
            "BACKEND ADD_DNS aaa dc0 a.example 15672",
            "FARM ADD shared round-robin rabbit3 rabbit1 aaa",
            "FARM PARTITION shared datacenter-affinity",
            "FARM PARTITION shared datacenter-affinity",
            "FARM ADD empty round-robin",
            "FARM ADD b round-robin rabbit2",
            "MAP BACKEND vhost-example rabbit1",
            "MAP FARM / shared",
            "MAP FARM dangling nope",
            "MAP DEFAULT b",
        ]
    )
    table.candidates("/")
    commands = config_commands(table)
    assert [to_line(command) for command in commands] == [
        "DATACENTER SET london-az1",
        "BACKEND ADD_DNS aaa dc0 a.example 15672",
        "BACKEND ADD rabbit1 london-az1 rabbit1.example 5672",
        "BACKEND ADD_DNS rabbit2 london-az2 rabbit2.example 5673",
        "BACKEND ADD rabbit3 london-az1 localhost 5674",
        "FARM ADD b round-robin rabbit2",
        "FARM ADD empty round-robin",
        "FARM ADD shared round-robin rabbit3 rabbit1 aaa",
        "FARM PARTITION shared datacenter-affinity",
        "FARM PARTITION shared datacenter-affinity",
        "MAP FARM / shared",
        "MAP FARM dangling nope",
        "MAP BACKEND vhost-example rabbit1",
        "MAP DEFAULT b",
    ]
    # Through the text and back, onto an empty table: the same configuration.
    rebuilt = build(to_line(command) for command in commands)
    assert rebuilt == table
    assert config_commands(rebuilt) == commands
