"""BACKEND DISABLE / ENABLE: disabled backends are configuration, skipped by new routes."""

from __future__ import annotations

import pytest

from amqprouter.control.grammar import to_line
from amqprouter.control.routing_commands import config_commands
from amqprouter.routing import NoRoute, RoutingTable
from tests.control.test_routing_commands import BASE, build, reply


def names(table: RoutingTable, vhost: str) -> list[str]:
    return [backend.name for backend in table.candidates(vhost)]


def test_disabled_farm_member_is_skipped_and_enable_brings_it_back() -> None:
    table = build([*BASE, "FARM ADD f round-robin rabbit1 rabbit2 rabbit3", "MAP FARM v f"])
    disabled = build(["BACKEND DISABLE rabbit2"], table)
    assert disabled.disabled == {"rabbit2"}
    for _ in range(3):
        assert "rabbit2" not in names(disabled, "v")
    enabled = build(["BACKEND ENABLE rabbit2"], disabled)
    assert enabled == table
    assert any("rabbit2" in names(enabled, "v") for _ in range(3))


def test_vhost_whose_only_backends_are_disabled_gets_a_clear_refusal() -> None:
    table = build(
        [*BASE, "FARM ADD f round-robin rabbit1", "MAP FARM v f", "MAP BACKEND w rabbit2"]
    )
    table = build(["BACKEND DISABLE rabbit1", "BACKEND DISABLE rabbit2"], table)
    for vhost, detail in (
        ("v", "vhost v is mapped to farm f, which has only disabled or drained backends"),
        ("w", "vhost w is mapped to backend rabbit2, which is disabled"),
    ):
        with pytest.raises(NoRoute) as caught:
            table.candidates(vhost)
        assert caught.value.text == (
            f"No enabled broker for vhost {vhost}: its backends are disabled"
        )
        assert caught.value.detail == detail


def test_unknown_backend_is_an_error() -> None:
    table = build(BASE)
    assert reply(table, "BACKEND DISABLE nosuch") == "Backend 'nosuch' not found\n"
    assert reply(table, "BACKEND ENABLE nosuch") == "Backend 'nosuch' not found\n"


def test_backend_print_marks_disabled_backends_only() -> None:
    table = build([*BASE, "BACKEND DISABLE rabbit2"])
    assert reply(table, "BACKEND PRINT") == (
        "rabbit1 (london-az1): rabbit1.example 10.0.0.1:5672\n"
        "rabbit2 (london-az2): rabbit2.example :5673 DISABLED\n"
        "rabbit3 (london-az1): localhost 127.0.0.1:5674\n"
    )


def test_disabled_is_printed_back_by_config_print_and_rebuilds() -> None:
    table = build([*BASE, "BACKEND DISABLE rabbit3", "BACKEND DISABLE rabbit1"])
    lines = [to_line(command) for command in config_commands(table)]
    assert lines[-2:] == ["BACKEND DISABLE rabbit1", "BACKEND DISABLE rabbit3"]
    assert build(lines) == table


def test_deleting_a_disabled_backend_forgets_it() -> None:
    table = build([*BASE, "BACKEND DISABLE rabbit2", "BACKEND DELETE rabbit2"])
    assert table.disabled == frozenset()
    readded = build(["BACKEND ADD_DNS rabbit2 london-az2 rabbit2.example 5673"], table)
    assert "DISABLED" not in reply(readded, "BACKEND PRINT")
