"""FARM STICKY against snapshots: replies, FARM PRINT, --json, CONFIG PRINT, a reload's
fold; the entries survive a FARM WEIGHT and OFF/ON."""

from __future__ import annotations

import json

from amqprouter.control import commands as c
from amqprouter.control.config_diff import fold
from amqprouter.control.grammar import to_line
from amqprouter.control.json_replies import farms
from amqprouter.control.routing_commands import config_commands
from tests.control.test_routing_commands import BASE, build, reply

STICKY = [*BASE, "FARM ADD s least-connections rabbit1 rabbit2", "FARM STICKY s ON 90"]


def test_farm_print_and_json_show_stickiness() -> None:
    table = build(STICKY)
    assert reply(table, "FARM PRINT") == "s: rabbit1*1 rabbit2*1 (least-connections, sticky 90s)\n"
    assert json.loads(farms(table))["stickySeconds"] == 90.0
    off = build(["FARM STICKY s OFF"], table)
    assert reply(off, "FARM PRINT") == "s: rabbit1*1 rabbit2*1 (least-connections)\n"
    rr = build([*BASE, "FARM ADD r round-robin rabbit1", "FARM STICKY r ON"])
    assert reply(rr, "FARM PRINT") == "r: rabbit1 (sticky 300s)\n"


def test_unknown_farm() -> None:
    assert reply(build(BASE), "FARM STICKY nope ON") == "Farm 'nope' not found\n"


def test_farm_add_again_turns_it_off_and_weight_keeps_it() -> None:
    table = build(STICKY)
    assert build(["FARM WEIGHT s rabbit1 3"], table).farms["s"].sticky == 90.0
    assert build(["FARM ADD s least-connections rabbit1"], table).farms["s"].sticky is None


def test_the_entries_outlive_the_snapshot_and_off_on() -> None:
    table = build([*STICKY, "MAP FARM v s"])
    first = table.route("v", "10.0.0.1")
    first.landed(first.candidates[1])  # failed over: the client keeps rabbit2
    again = build(["FARM STICKY s OFF", "FARM STICKY s ON 90"], table)
    assert again.sticky is table.sticky
    assert again.route("v", "10.0.0.1").candidates[0].name == first.candidates[1].name


def test_config_print_writes_it_after_the_farm_and_reads_back_the_same() -> None:
    table = build(STICKY)
    lines = [to_line(command) for command in config_commands(table)]
    assert lines[lines.index("FARM ADD s least-connections rabbit1 rabbit2") + 1] == (
        "FARM STICKY s ON 90"
    )
    assert build(lines) == table


def test_a_file_folds_sticky_into_its_farm_and_off_removes_it() -> None:
    add = c.FarmAdd("s", "round-robin", ("a",))
    state = fold(
        [("f:1", add), ("f:2", c.FarmSticky("s", 30)), ("f:3", c.FarmSticky("s", 60))],
        strict=True,
    )
    assert state == {("farm", "s"): (add, c.FarmSticky("s", 60))}
    state = fold(
        [("f:1", add), ("f:2", c.FarmSticky("s", 30)), ("f:3", c.FarmSticky("s", None))],
        strict=True,
    )
    assert state == {("farm", "s"): (add,)}
