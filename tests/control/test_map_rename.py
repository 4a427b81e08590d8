"""MAP BACKEND/FARM ... AS: the grammar (a table of lines and what they parse to), the
line written back (quoted where needed), MAP PRINT, CONFIG PRINT rebuilding the same
table, a reload's difference seeing a changed AS, and the status page."""

from __future__ import annotations

import pytest

from amqprouter.control import commands as c
from amqprouter.control.config_diff import FoldError, Plan, State, diff, fold
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.control.routing_commands import config_commands
from amqprouter.observe.stats import StatsCollector
from amqprouter.observe.status_page import status_page
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.control.test_routing_commands import BASE, build, reply

_AS_NEEDS_ONE = "MAP {} ... AS needs one broker vhost name after AS.\n"

#: A line, what it parses to, and the line ``to_line`` writes back for it.
GRAMMAR: list[tuple[str, c.Command | ParseError, str | None]] = [
    ("MAP BACKEND orders b1 AS prod", c.MapBackend("orders", "b1", "prod"), None),
    ("MAP FARM orders f AS prod", c.MapFarm("orders", "f", "prod"), None),
    (
        "map backend orders b1 as prod",
        c.MapBackend("orders", "b1", "prod"),
        "MAP BACKEND orders b1 AS prod",
    ),
    ("MAP BACKEND orders b1 AS 'my vhost'", c.MapBackend("orders", "b1", "my vhost"), None),
    ('MAP FARM "a b" f AS "it\'s"', c.MapFarm("a b", "f", "it's"), "MAP FARM 'a b' f AS \"it's\""),
    ("MAP FARM tenant-* f AS shared", c.MapFarm("tenant-*", "f", "shared"), None),
    ("MAP BACKEND orders b1 AS /", c.MapBackend("orders", "b1", "/"), None),
    # AS's name is a name like any other: a word spelled AS too.
    ("MAP BACKEND orders b1 AS AS", c.MapBackend("orders", "b1", "AS"), None),
    ("MAP BACKEND orders b1", c.MapBackend("orders", "b1"), None),
    # Another word after the target is refused, as any unused word is.
    (
        "MAP BACKEND orders b1 extra",
        ParseError("Unexpected word 'extra': 'MAP BACKEND orders b1' takes no more words.\n"),
        None,
    ),
    ("MAP BACKEND orders b1 AS", ParseError(_AS_NEEDS_ONE.format("BACKEND")), None),
    ("MAP FARM orders f AS", ParseError(_AS_NEEDS_ONE.format("FARM")), None),
    ("MAP FARM orders f AS ''", ParseError("An empty word ('' or \"\") names nothing.\n"), None),
    ("MAP BACKEND orders b1 AS x y", ParseError(_AS_NEEDS_ONE.format("BACKEND")), None),
]


@pytest.mark.parametrize(("line", "parsed", "written"), GRAMMAR)
def test_map_as_parses_and_writes_back(
    line: str, parsed: c.Command | ParseError, written: str | None
) -> None:
    assert parse(line) == parsed
    if not isinstance(parsed, ParseError):
        back = to_line(parsed)
        assert back == (line if written is None else written)
        assert parse(back) == parsed


RENAMES = [
    *BASE,
    "FARM ADD f round-robin rabbit1 rabbit2",
    "MAP BACKEND orders rabbit1 AS 'my vhost'",
    "MAP FARM tenant-* f AS shared",
    "MAP BACKEND plain rabbit2",
    "MAP DEFAULT f",
]


def test_map_print_shows_the_broker_vhost_quoted_as_the_grammar_reads_it() -> None:
    assert reply(build(RENAMES), "MAP PRINT") == (
        "\"orders\" => Backend:rabbit1 AS 'my vhost'\n"
        '"plain" => Backend:rabbit2\n'
        '"tenant-*" => Farm:f AS shared\n'
        "(default) => Farm:f\n"
    )


def test_config_print_rebuilds_the_renames() -> None:
    table = build(RENAMES)
    lines = [to_line(command) for command in config_commands(table)]
    assert [line for line in lines if line.startswith("MAP")] == [
        "MAP BACKEND orders rabbit1 AS 'my vhost'",
        "MAP BACKEND plain rabbit2",
        "MAP FARM tenant-* f AS shared",
        "MAP DEFAULT f",
    ]
    rebuilt = build(lines)
    assert rebuilt == table
    assert rebuilt.renames == {"orders": "my vhost", "tenant-*": "shared"}


def test_remapping_without_as_or_unmapping_forgets_the_rename() -> None:
    table = build([*RENAMES, "MAP BACKEND orders rabbit2", "MAP UNMAP tenant-*"])
    assert table.renames == {}
    assert table.route("orders").broker_vhost is None
    # A table that differs only by a rename is a different configuration.
    assert build(RENAMES) != build([*RENAMES, "MAP FARM tenant-* f AS other"])


def _state(text: str) -> State:
    commands = []
    for number, line in enumerate(text.strip().splitlines(), start=1):
        command = parse(line)
        assert not isinstance(command, ParseError), command
        commands.append((f"f:{number}", command))
    state = fold(commands, strict=True)
    assert not isinstance(state, FoldError), state
    return state


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        ("MAP BACKEND v b1", "MAP BACKEND v b1 AS w", "Replaced map v -> b1 AS w"),
        ("MAP BACKEND v b1 AS w", "MAP BACKEND v b1 AS 'x y'", "Replaced map v -> b1 AS 'x y'"),
        ("MAP FARM v f AS w", "MAP FARM v f", "Replaced map v -> f"),
    ],
)
def test_a_reload_sees_a_changed_as_as_a_changed_mapping(old: str, new: str, change: str) -> None:
    base = "BACKEND ADD b1 dc 127.0.0.1 5672\nFARM ADD f round-robin b1\n"
    plan = diff(_state(base + old), _state(base + new))
    assert isinstance(plan, Plan), plan
    assert plan.changes == (change,)
    assert [to_line(command) for command in plan.routing.commands] == [new]


def test_a_reload_of_the_same_rename_changes_nothing() -> None:
    text = "BACKEND ADD b1 dc 127.0.0.1 5672\nMAP BACKEND v b1 AS 'my vhost'\n"
    plan = diff(_state(text), _state(text))
    assert isinstance(plan, Plan)
    assert plan.changes == ()


def test_the_status_page_shows_the_broker_vhost() -> None:
    server = Server(SessionSettings(), build(RENAMES))
    page = status_page(server, StatsCollector(server.sessions, 1.0), ready=None, live=None)
    assert "<td>orders</td><td>backend rabbit1 AS my vhost</td>" in page
    assert "<td>tenant-*</td><td>farm f AS shared</td>" in page
    assert "<td>plain</td><td>backend rabbit2</td>" in page
