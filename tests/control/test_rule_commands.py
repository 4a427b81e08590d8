"""RULE ADD/DELETE/PRINT against snapshots: replies, errors, RULE PRINT, --json, CONFIG
PRINT and a reload's plan."""

from __future__ import annotations

import json

from amqprouter.control import commands as c
from amqprouter.control.config_diff import diff, fold
from amqprouter.control.grammar import to_line
from amqprouter.control.json_replies import rules
from amqprouter.control.routing_commands import config_commands
from tests.control.test_routing_commands import BASE, build, reply

RULES = [
    *BASE,
    "FARM ADD site-a round-robin rabbit1",
    "RULE ADD 20 10.0.0.0/8 BACKEND rabbit2",
    "RULE ADD 10 10.1.0.0/16,2001:db8::/32 FARM site-a BREAK",
]


def test_rule_print_by_priority() -> None:
    table = build(RULES)
    assert reply(table, "RULE PRINT") == (
        "10 10.1.0.0/16,2001:db8::/32 => Farm:site-a BREAK\n"
        "20 10.0.0.0/8 => Backend:rabbit2 CONTINUE\n"
    )
    assert [json.loads(line) for line in rules(table).splitlines()] == [
        {
            "priority": 10,
            "networks": ["10.1.0.0/16", "2001:db8::/32"],
            "type": "farm",
            "name": "site-a",
            "onDown": "BREAK",
        },
        {
            "priority": 20,
            "networks": ["10.0.0.0/8"],
            "type": "backend",
            "name": "rabbit2",
            "onDown": "CONTINUE",
        },
    ]


def test_same_priority_replaces_and_delete_removes() -> None:
    table = build([*RULES, "RULE ADD 10 192.168.0.0/24 BACKEND rabbit1"])
    assert reply(table, "RULE PRINT").splitlines()[0] == (
        "10 192.168.0.0/24 => Backend:rabbit1 CONTINUE"
    )
    table = build(["RULE DELETE 10"], table)
    assert [rule.priority for rule in table.rules] == [20]
    assert reply(table, "RULE DELETE 10") == "Rule 10 not found\n"


def test_rule_targets_must_exist() -> None:
    table = build(BASE)
    assert reply(table, "RULE ADD 1 10.0.0.0/8 FARM nope") == "Farm 'nope' not found\n"
    assert reply(table, "RULE ADD 1 10.0.0.0/8 BACKEND nope") == "Backend 'nope' not found\n"


def test_config_print_writes_rules_last_and_reads_back_the_same() -> None:
    table = build(RULES)
    lines = [to_line(command) for command in config_commands(table)]
    assert lines[-2:] == [
        "RULE ADD 10 10.1.0.0/16,2001:db8::/32 FARM site-a BREAK",
        "RULE ADD 20 10.0.0.0/8 BACKEND rabbit2 CONTINUE",
    ]
    assert build(lines) == table


def test_a_reload_deletes_removed_rules_first_and_adds_new_ones_last() -> None:
    farm = c.FarmAdd("f", "round-robin", ("b",))
    old = fold([("f:1", farm), ("f:2", c.RuleAdd(1, ("10.0.0.0/8",), "farm", "f"))], strict=True)
    new = fold(
        [
            ("f:1", c.FarmAdd("f", "round-robin", ("b", "c"))),
            ("f:2", c.RuleAdd(2, ("10.0.0.0/8",), "farm", "f")),
        ],
        strict=True,
    )
    assert isinstance(old, dict) and isinstance(new, dict)
    plan = diff(old, new)
    assert not isinstance(plan, str)
    commands = plan.routing.commands
    assert commands[0] == c.RuleDelete(1)
    assert commands[-1] == c.RuleAdd(2, ("10.0.0.0/8",), "farm", "f")
    assert "Removed rule 1" in plan.routing.changes and "Added rule 2" in plan.routing.changes
