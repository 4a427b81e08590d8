"""MAP POOL vhost ON|OFF|DEFAULT: the grammar, the table, MAP PRINT, CONFIG PRINT rebuilding
it, a reload's difference, and the server's answer to "is this vhost pooled" with and
without ``--pool``, and the status page's line for the pool."""

from __future__ import annotations

import json

import pytest

from amqprouter.control import commands as c
from amqprouter.control import json_replies
from amqprouter.control.config_diff import Plan, diff
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.control.routing_commands import config_commands
from amqprouter.observe.stats import StatsCollector
from amqprouter.observe.status_page import status_page
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from tests.control.test_config_diff import _state
from tests.control.test_routing_commands import BASE, build, reply

_NEEDS = ParseError("MAP POOL needs a vhost and ON, OFF or DEFAULT.\n")


@pytest.mark.parametrize(
    ("line", "parsed", "written"),
    [
        ("MAP POOL orders ON", c.MapPool("orders", True), None),
        ("MAP POOL orders OFF", c.MapPool("orders", False), None),
        ("MAP POOL orders DEFAULT", c.MapPool("orders", None), None),
        ("map pool orders on", c.MapPool("orders", True), "MAP POOL orders ON"),
        ("MAP POOL 'my vhost' ON", c.MapPool("my vhost", True), None),
        ("MAP POOL orders", _NEEDS, None),
        ("MAP POOL orders MAYBE", _NEEDS, None),
        ("MAP POOL orders ON now", _NEEDS, None),
        ("MAP POOL", _NEEDS, None),
    ],
)
def test_map_pool_parses_and_writes_back(
    line: str, parsed: c.Command | ParseError, written: str | None
) -> None:
    assert parse(line) == parsed
    if not isinstance(parsed, ParseError):
        back = to_line(parsed)
        assert back == (line if written is None else written)
        assert parse(back) == parsed


POOLS = [*BASE, "MAP BACKEND orders rabbit1", "MAP POOL orders ON", "MAP POOL reports OFF"]


def test_the_table_keeps_each_vhosts_word_and_default_forgets_it() -> None:
    table = build(POOLS)
    assert table.pools == {"orders": True, "reports": False}
    assert build([*POOLS, "MAP POOL orders DEFAULT"]).pools == {"reports": False}
    assert build([*POOLS, "MAP POOL reports ON"]).pools == {"orders": True, "reports": True}
    # A table that differs only by a pool word is a different configuration.
    assert build(POOLS) != build(BASE)


def test_map_print_and_config_print_show_it() -> None:
    table = build(POOLS)
    assert reply(table, "MAP PRINT") == (
        '"orders" => Backend:rabbit1\n"orders" pool ON\n"reports" pool OFF\n'
    )
    lines = [to_line(command) for command in config_commands(table)]
    assert [line for line in lines if line.startswith("MAP POOL")] == [
        "MAP POOL orders ON",
        "MAP POOL reports OFF",
    ]
    assert build(lines) == table


def test_a_reload_sets_changes_and_forgets_pool_words() -> None:
    old = "MAP POOL a ON\nMAP POOL b ON"
    new = "MAP POOL a OFF\nMAP POOL c ON"
    plan = diff(_state(old), _state(new))
    assert isinstance(plan, Plan)
    assert [to_line(command) for command in plan.routing.commands] == [
        "MAP POOL b DEFAULT",
        "MAP POOL c ON",
        "MAP POOL a OFF",
    ]


@pytest.mark.parametrize("pool_flag", [False, True])
def test_the_server_pools_by_the_vhosts_word_else_by_the_flag(pool_flag: bool) -> None:
    server = Server(SessionSettings(), build(POOLS), pool=pool_flag)
    assert server.pooled("orders") is True
    assert server.pooled("reports") is False
    assert server.pooled("other") is pool_flag


def test_map_print_json_gives_each_vhosts_pool_word() -> None:
    table = build(POOLS)
    records = [json.loads(line) for line in json_replies.mappings(table).splitlines()]
    assert [(r["vhost"], r["type"], r["pool"]) for r in records] == [
        ("orders", "backend", True),
        ("reports", None, False),
    ]


@pytest.mark.parametrize("pool_flag", [False, True])
def test_the_status_page_shows_the_pool_once_in_use(pool_flag: bool) -> None:
    server = Server(SessionSettings(), build(BASE), pool=pool_flag)
    page = status_page(server, StatsCollector(server.sessions, 1.0), ready=None, live=None)
    shown = "<td>pooled broker connections</td><td>0 (0 clients, 0 channels, 0 idle; "
    assert (shown in page) is pool_flag
