"""FARM ADD with weighted selectors, FARM WEIGHT, and how FARM PRINT, --json and CONFIG
PRINT show weights."""

from __future__ import annotations

import json

from amqprouter.control import commands as c
from amqprouter.control.grammar import to_line
from amqprouter.control.json_replies import farms
from amqprouter.control.routing_commands import config_commands
from tests.control.test_routing_commands import BASE, build, reply

WEIGHTED = [*BASE, "FARM ADD w weighted-round-robin rabbit1*5 rabbit2 rabbit3*0"]


def test_farm_print_shows_weights_and_selector() -> None:
    table = build(
        [*WEIGHTED, "FARM ADD lc least-connections rabbit2", "FARM ADD rr round-robin rabbit1"]
    )
    assert reply(table, "FARM PRINT") == (
        "lc: rabbit2*1 (least-connections)\n"
        "rr: rabbit1 \n"  # amqpprox's line, unchanged
        "w: rabbit1*5 rabbit2*1 rabbit3*0 (weighted-round-robin)\n"
    )
    assert [json.loads(line) for line in farms(table).splitlines()][-1] == {
        "name": "w",
        "selector": "weighted-round-robin",
        "members": ["rabbit1", "rabbit2", "rabbit3"],
        "weights": [5, 1, 0],
        "policies": [],
        "stickySeconds": None,
    }


def test_farm_weight_changes_one_member() -> None:
    table = build([*WEIGHTED, "FARM WEIGHT w rabbit3 7", "FARM WEIGHT w rabbit1 1"])
    assert table.farms["w"].weights == (1, 1, 7)


def test_farm_weight_errors() -> None:
    table = build([*WEIGHTED, "FARM ADD rr round-robin rabbit1"])
    assert reply(table, "FARM WEIGHT nope rabbit1 2") == "Farm 'nope' not found\n"
    assert reply(table, "FARM WEIGHT w nope 2") == ("Backend 'nope' is not a member of farm 'w'\n")
    assert reply(table, "FARM WEIGHT rr rabbit1 2") == (
        "Farm 'rr' uses round-robin, which has no weights: FARM ADD it with "
        "weighted-round-robin or least-connections.\n"
    )


def test_round_robin_takes_no_weights_but_weight_one_is_no_weight() -> None:
    table = build(BASE)
    assert reply(table, "FARM ADD rr round-robin rabbit1*2") == (
        "Selector 'round-robin' takes no weights: use weighted-round-robin or "
        "least-connections for name*weight members.\n"
    )
    assert reply(table, "FARM ADD rr round-robin rabbit1*1 rabbit2") == ""


def test_a_member_named_twice_keeps_its_first_weight() -> None:
    table = build([*BASE, "FARM ADD w weighted-round-robin rabbit1*3 rabbit2 rabbit1*9"])
    assert table.farms["w"].members == ("rabbit1", "rabbit2")
    assert table.farms["w"].weights == (3, 1)


def test_config_print_writes_weights_in_farm_add_and_reads_back_the_same() -> None:
    table = build([*WEIGHTED, "FARM WEIGHT w rabbit2 4"])
    lines = [to_line(command) for command in config_commands(table)]
    assert "FARM ADD w weighted-round-robin rabbit1*5 rabbit2*4 rabbit3*0" in lines
    assert build(lines) == table


def test_farm_weight_is_a_mutation_with_a_canonical_line() -> None:
    assert isinstance(c.FarmWeight("w", "a", 3), c.MutatingCommand)
    assert to_line(c.FarmWeight("w", "a", 3)) == "FARM WEIGHT w a 3"


def test_a_config_file_folds_farm_weight_into_its_farm() -> None:
    from amqprouter.control.config_diff import FoldError, fold

    add = c.FarmAdd("w", "weighted-round-robin", ("a", "b"), (2, 1))
    state = fold([("f:1", add), ("f:2", c.FarmWeight("w", "b", 3))], strict=True)
    assert state == {("farm", "w"): (c.FarmAdd("w", "weighted-round-robin", ("a", "b"), (2, 3)),)}
    orphan = fold([("f:1", c.FarmWeight("w", "b", 3))], strict=True)
    assert isinstance(orphan, FoldError)
