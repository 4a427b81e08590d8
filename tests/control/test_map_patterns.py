"""MAP with vhost patterns: MAP PRINT in matching order, CONFIG PRINT keeps the order of
patterns that tie, ``**`` refused, MAP UNMAP of a pattern."""

from __future__ import annotations

from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.control.routing_commands import config_commands
from tests.control.test_routing_commands import BASE, build, reply

MAPS = [
    *BASE,
    "FARM ADD f round-robin rabbit1 rabbit2",
    "MAP BACKEND *-x rabbit1",
    "MAP FARM a-* f",  # ties with *-x: mapped later, matched later
    "MAP FARM *.eu f",
    "MAP BACKEND tenant-* rabbit2",
    "MAP BACKEND exact rabbit1",
    "MAP DEFAULT f",
]


def test_map_print_lists_in_matching_order() -> None:
    assert reply(build(MAPS), "MAP PRINT") == (
        '"exact" => Backend:rabbit1\n'
        '"tenant-*" => Backend:rabbit2\n'
        '"*.eu" => Farm:f\n'
        '"*-x" => Backend:rabbit1\n'
        '"a-*" => Farm:f\n'
        "(default) => Farm:f\n"
    )


def test_config_print_keeps_the_order_of_ties() -> None:
    table = build(MAPS)
    lines = [to_line(command) for command in config_commands(table)]
    maps = [line for line in lines if line.startswith("MAP")]
    assert maps == [
        "MAP BACKEND exact rabbit1",
        "MAP BACKEND tenant-* rabbit2",
        "MAP FARM *.eu f",
        "MAP BACKEND *-x rabbit1",
        "MAP FARM a-* f",
        "MAP DEFAULT f",
    ]
    rebuilt = build(lines)
    assert rebuilt == table
    assert rebuilt.route("a-x").mapping == "*-x"  # still the first mapped of the tie


def test_remapping_a_pattern_keeps_its_place_and_unmap_removes_it() -> None:
    table = build([*MAPS, "MAP FARM *-x f"])
    assert table.route("1-x").farm is not None
    assert [v for v, _t in table.mapping_order()][3:] == ["*-x", "a-*"]
    table = build(["MAP UNMAP *-x"], table)
    assert "*-x" not in table.mappings
    assert table.route("1-x").mapping == "(default)"


def test_double_star_is_refused() -> None:
    assert parse("MAP FARM a**b f") == ParseError(
        "Vhost pattern 'a**b' holds '**': write one '*' (it matches any run).\n"
    )
    assert parse("MAP BACKEND ** b") == ParseError(
        "Vhost pattern '**' holds '**': write one '*' (it matches any run).\n"
    )
