"""The reload's difference, as a pure function: a file's old lines and new lines in, the
commands that apply the change and the reply lines out (control/config_diff.py)."""

from __future__ import annotations

import pytest

from amqprouter.control import commands as c
from amqprouter.control.config_diff import FoldError, Plan, State, diff, fold
from amqprouter.control.grammar import ParseError, parse, to_line


def _state(text: str, *, strict: bool = True) -> State:
    commands = []
    for number, line in enumerate(text.strip().splitlines(), start=1):
        command = parse(line)
        assert not isinstance(command, ParseError), command
        commands.append((f"f:{number}", command))
    state = fold(commands, strict=strict)
    assert not isinstance(state, FoldError), state
    return state


def _plan(old: str, new: str) -> Plan:
    plan = diff(_state(old), _state(new))
    assert isinstance(plan, Plan), plan
    return plan


def _lines(commands: tuple[c.Command, ...]) -> list[str]:
    return [to_line(command) for command in commands]


BASE = """
BACKEND ADD b1 dc 127.0.0.1 5672
BACKEND ADD_DNS b2 dc localhost 5672
FARM ADD farm1 round-robin b1 b2
FARM PARTITION farm1 datacenter-affinity
MAP BACKEND vhost1 b1
MAP DEFAULT farm1
LISTEN START 5673
"""


def test_the_same_file_changes_nothing() -> None:
    plan = _plan(BASE, BASE)
    assert plan.changes == ()
    assert plan.routing.commands == () and plan.steps == ()


def test_a_new_backend_and_a_map_moved_to_a_farm() -> None:
    new = BASE.replace("MAP BACKEND vhost1 b1", "MAP FARM vhost1 farm2") + (
        "BACKEND ADD b3 dc 127.0.0.1 5672\nFARM ADD farm2 random b3\n"
    )
    plan = _plan(BASE, new)
    assert plan.changes == (
        "Added backend b3",
        "Added farm farm2",
        "Replaced map vhost1 -> farm2",
    )
    # Backends before the farms that use them, farms before the maps that name them.
    assert _lines(plan.routing.commands) == [
        "BACKEND ADD b3 dc 127.0.0.1 5672",
        "FARM ADD farm2 random b3",
        "MAP FARM vhost1 farm2",
    ]
    assert plan.steps == ()


def test_removals_unmap_before_deleting_farms_before_deleting_backends() -> None:
    new = "BACKEND ADD_DNS b2 dc localhost 5672\nLISTEN START 5673\n"
    plan = _plan(BASE, new)
    assert _lines(plan.routing.commands) == [
        "MAP UNMAP vhost1",
        "MAP REMOVE_DEFAULT",
        "FARM DELETE farm1",
        "BACKEND DELETE b1",
    ]
    assert set(plan.changes) == {
        "Removed backend b1",
        "Removed farm farm1",
        "Removed map vhost1",
        "Removed default farm",
    }


def test_a_changed_backend_is_replaced_and_the_farms_using_it_are_added_again() -> None:
    new = BASE.replace("BACKEND ADD b1 dc 127.0.0.1 5672", "BACKEND ADD b1 dc 127.0.0.1 5674 TLS")
    plan = _plan(BASE, new)
    assert plan.changes == ("Replaced backend b1", "Re-added farm farm1 (with replaced backend b1)")
    assert _lines(plan.routing.commands) == [
        "FARM DELETE farm1",  # BACKEND DELETE refuses a backend a farm uses
        "BACKEND DELETE b1",
        "BACKEND ADD b1 dc 127.0.0.1 5674 TLS",
        "FARM ADD farm1 round-robin b1 b2",
        "FARM PARTITION farm1 datacenter-affinity",  # its policies come back with it
    ]


def test_a_replaced_backend_keeps_the_disabled_mark_the_file_gives_it() -> None:
    old = "BACKEND ADD b1 dc 127.0.0.1 5672\nBACKEND DISABLE b1\n"
    new = "BACKEND ADD b1 dc 127.0.0.2 5672\nBACKEND DISABLE b1\n"
    assert _lines(_plan(old, new).routing.commands) == [
        "BACKEND DELETE b1",
        "BACKEND ADD b1 dc 127.0.0.2 5672",
        "BACKEND DISABLE b1",  # BACKEND DELETE forgot it
    ]
    enabled = _plan(old, "BACKEND ADD b1 dc 127.0.0.1 5672\n")
    assert enabled.changes == ("Enabled backend b1",)
    assert _lines(enabled.routing.commands) == ["BACKEND ENABLE b1"]


def test_later_lines_win_and_opposites_cancel() -> None:
    state = _state(
        "LOG FILE 3\nLOG FILE 5\nMAP BACKEND v b1\nMAP UNMAP v\nLIMIT CONN_RATE DEFAULT 5\n"
        "LIMIT DISABLE CONN_RATE DEFAULT\nLISTEN START 1\nLISTEN START 2\nLISTEN STOP\n"
        "BACKEND ADD b dc h 1\nBACKEND DELETE b\nBACKEND ADD b dc h 2\nBACKEND PRINT\n"
    )
    assert state == {
        ("log", "FILE"): (c.LogFile(5),),
        ("backend", "b"): (c.BackendAdd("b", "dc", "h", 2),),
    }


def test_non_routing_settings_are_steps_of_their_own_listeners_last() -> None:
    old = "LIMIT CONN_RATE DEFAULT 5\nLISTEN START 5673\nBACKEND ADD b1 dc h 1\n"
    new = (
        "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1/32\nLIMIT CONNECTIONS VHOST v 3\n"
        "BACKEND ADD b1 dc h 1\n"
        "BACKEND CHECK b1 ON\nAUTH SERVICE localhost 8000 /auth\n"
    )
    plan = _plan(old, new)
    assert [_lines(step.commands) for step in plan.steps] == [
        ["BACKEND CHECK b1 ON 2000 3 2 2000"],
        ["LIMIT DISABLE CONN_RATE DEFAULT"],
        ["LIMIT CONNECTIONS VHOST v 3"],
        ["AUTH SERVICE localhost 8000 /auth"],
        ["LISTEN STOP 5673", "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1/32"],
    ]
    assert plan.changes == (
        "Added BACKEND CHECK b1 ON 2000 3 2 2000",
        "Removed LIMIT CONN_RATE DEFAULT 5",
        "Added LIMIT CONNECTIONS VHOST v 3",
        "Added AUTH SERVICE localhost 8000 /auth",
        "Replaced LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1/32",
    )


def test_tls_changes_of_one_direction_go_together() -> None:
    old = "TLS INGRESS CERT_CHAIN_FILE /a.pem\nTLS INGRESS KEY_FILE /a.key\n"
    new = "TLS INGRESS CERT_CHAIN_FILE /b.pem\nTLS INGRESS RSA_KEY_FILE /b.key\n"
    (step,) = _plan(old, new).steps
    # One step: the new certificate is checked against the new key, not the old one.
    assert _lines(step.commands) == [
        "TLS INGRESS CERT_CHAIN_FILE /b.pem",
        "TLS INGRESS RSA_KEY_FILE /b.key",
    ]


@pytest.mark.parametrize(
    ("old", "line"),
    [
        ("TLS INGRESS CA_CERT_FILE /ca.pem", "TLS INGRESS CA_CERT_FILE /ca.pem"),
        ("TLS EGRESS CIPHERS SET ECDHE", "TLS EGRESS CIPHERS SET ECDHE"),
        ("MAPHOSTNAME DNS", "MAPHOSTNAME DNS"),
    ],
)
def test_a_line_no_command_takes_back_cannot_be_removed(old: str, line: str) -> None:
    assert diff(_state(old), _state("LOG FILE 3")) == (
        f"'{line}' was removed from the file, and no command takes it back: restart the "
        "router to apply that"
    )


def test_removing_a_publisher_restarts_the_others() -> None:
    old = "STAT SEND localhost 8125\nSTAT SEND localhost 8126\n"
    (step,) = _plan(old, "STAT SEND localhost 8126\n").steps
    assert _lines(step.commands) == ["STAT STOP SEND", "STAT SEND localhost 8126"]
    assert step.changes == ("Removed STAT SEND localhost 8125",)


def test_actions_are_refused_by_a_reload_and_skipped_at_start() -> None:
    commands = [("f:1", parse("LOG FILE 4")), ("f:2", parse("VHOST PAUSE v"))]
    valid = [(where, command) for where, command in commands if not isinstance(command, ParseError)]
    assert fold(valid, strict=True) == FoldError(
        "f:2", "'VHOST PAUSE v' is an action, not configuration: a reload does not run it"
    )
    assert fold(valid, strict=False) == {("log", "FILE"): (c.LogFile(4),)}


def test_a_partition_of_a_farm_the_file_does_not_add_is_refused() -> None:
    assert fold([("f:1", c.FarmPartition("x", "datacenter-affinity"))], strict=True) == FoldError(
        "f:1", "FARM PARTITION of farm 'x', which the file does not add before"
    )
