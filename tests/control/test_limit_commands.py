"""LIMIT through the controller: amqpprox's reply texts, word for word (reference
section 1), ours for CONNECTIONS, LIMIT PRINT in amqpprox's order, CONFIG PRINT."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from amqprouter.control.controller import Controller
from amqprouter.server import Server
from amqprouter.session import SessionSettings

ALARM_DEFAULT = (
    "The limiter will only log at warning level with AMQPROUTER_CONNECTION_LIMIT as a substring "
    "and the relevant limit details, when the new incoming connection violates the default "
    "limit for all vhosts.\n"
)
ALARM_VHOST = (
    "The limiter will only log at warning level with AMQPROUTER_CONNECTION_LIMIT as a substring "
    "and the relevant limit details, when the new incoming connection violates the specified "
    "limit.\n"
)


async def _replies(lines: Sequence[str]) -> list[str]:
    server = Server(SessionSettings())
    controller = Controller(server, request_exit=lambda: None)
    return [(await controller.handle(line)).text for line in lines]


def replies(*lines: str) -> list[str]:
    return trio.run(_replies, lines)


def test_set_and_disable_replies() -> None:
    assert replies(
        "LIMIT CONN_RATE DEFAULT 5",
        "LIMIT CONN_RATE VHOST v 3",
        "LIMIT CONN_RATE_ALARM DEFAULT 7",
        "LIMIT CONN_RATE_ALARM VHOST v 2",
        "LIMIT DATA_RATE DEFAULT 1000",
        "LIMIT DATA_RATE_ALARM VHOST v 10",
        "LIMIT CONNECTIONS DEFAULT 100",
        "LIMIT CONNECTIONS VHOST v 4",
        "LIMIT DISABLE CONN_RATE DEFAULT",
        "LIMIT DISABLE CONN_RATE VHOST v",
        "LIMIT DISABLE CONN_RATE_ALARM DEFAULT",
        "LIMIT DISABLE CONN_RATE_ALARM VHOST v",
        "LIMIT DISABLE DATA_RATE DEFAULT",
        "LIMIT DISABLE DATA_RATE_ALARM VHOST v",
        "LIMIT DISABLE CONNECTIONS DEFAULT",
        "LIMIT DISABLE CONNECTIONS VHOST v",
    ) == [
        "Default connection rate limit is set to 5 connections per second.\n",
        "For vhost v, Allow average 3 number of connections per 1 seconds\n",
        "Default connection rate limit is set to 7 connections per second in alarm only mode.\n"
        + ALARM_DEFAULT,
        "For vhost v, Allow average 2 number of connections per 1 seconds in alarm only mode.\n"
        + ALARM_VHOST,
        "",
        "",
        "Default concurrent connection limit is set to 100 connections.\n",
        "For vhost v, allow at most 4 concurrent connections.\n",
        "Successfully disabled default connection rate limit\n",
        "Successfully disabled specific connection rate limit for vhost v\n",
        "Successfully disabled default alarm only connection rate limit\n",
        "Successfully disabled specific alarm only connection rate limit for vhost v\n",
        "",
        "",
        "Successfully disabled default concurrent connection limit\n",
        "Successfully disabled specific concurrent connection limit for vhost v\n",
    ]


def test_print_with_nothing_configured() -> None:
    assert replies("LIMIT PRINT", "LIMIT PRINT v") == [
        "No default limit configured for any vhost.\n",
        "No limit configured for vhost v.\n",
    ]


def test_print_defaults_in_the_reference_order() -> None:
    *_, printed = replies(
        "LIMIT CONNECTIONS DEFAULT 9",
        "LIMIT DATA_RATE DEFAULT 1000",
        "LIMIT DATA_RATE_ALARM DEFAULT 500",
        "LIMIT CONN_RATE DEFAULT 5",
        "LIMIT CONN_RATE_ALARM DEFAULT 7",
        "LIMIT PRINT",
    )
    assert printed == (
        "Default limit for any vhost, allow average 7 connections per second in alarm only mode.\n"
        "Default limit for any vhost, allow average 5 connections per second.\n"
        "Default data limit for any vhost, allow max 500 bytes per second in alarm only mode.\n"
        "Default data limit for any vhost, allow max 1000 bytes per second.\n"
        "Default limit for any vhost, allow at most 9 concurrent connections.\n"
    )


def test_print_lists_every_vhost_limit_in_force_after_the_defaults() -> None:
    # A vhost limit alone: amqpprox said "No default limit ..." and nothing more, while
    # the limit refused clients. The reference's line stays first; the limit follows.
    *_, alone = replies("LIMIT CONNECTIONS VHOST / 2", "LIMIT PRINT")
    assert alone == (
        "No default limit configured for any vhost.\n"
        "For vhost /, allow at most 2 concurrent connections.\n"
    )
    *_, printed = replies(
        "LIMIT CONN_RATE DEFAULT 5",
        "LIMIT DATA_RATE VHOST w 1000",
        "LIMIT CONN_RATE_ALARM VHOST v 7",
        "LIMIT CONN_RATE VHOST v 1",
        "LIMIT PRINT",
    )
    # Each vhost's own limits only (not the DEFAULT's again), vhosts sorted.
    assert printed == (
        "Default limit for any vhost, allow average 5 connections per second.\n"
        "Alarm only limit, for vhost v, Allow average 7 number of connections per 1 seconds.\n"
        "For vhost v, Allow average 1 number of connections per 1 seconds.\n"
        "For vhost w, allow max 1000 bytes per second.\n"
    )
    *_, disabled = replies(
        "LIMIT CONNECTIONS VHOST / 2", "LIMIT DISABLE CONNECTIONS VHOST /", "LIMIT PRINT"
    )
    assert disabled == "No default limit configured for any vhost.\n"


def test_print_vhost_own_and_default_forms() -> None:
    *_, own, defaulted = replies(
        "LIMIT CONN_RATE_ALARM VHOST v 7",
        "LIMIT CONN_RATE VHOST v 5",
        "LIMIT CONN_RATE_ALARM DEFAULT 70",
        "LIMIT CONN_RATE DEFAULT 50",
        "LIMIT DATA_RATE_ALARM VHOST v 500",
        "LIMIT DATA_RATE DEFAULT 1000",
        "LIMIT CONNECTIONS VHOST v 3",
        "LIMIT PRINT v",
        "LIMIT PRINT w",
    )
    assert own == (
        "Alarm only limit, for vhost v, Allow average 7 number of connections per 1 seconds.\n"
        "For vhost v, Allow average 5 number of connections per 1 seconds.\n"
        "Alarm only data limit, for vhost v, allow max 500 bytes per second.\n"
        "For vhost v, allow max 1000 bytes per second.\n"
        "For vhost v, allow at most 3 concurrent connections.\n"
    )
    assert defaulted == (
        "Alarm only limit, for vhost w, allow average 70 number of connections per second.\n"
        "For vhost w, allow average 50 number of connections per second.\n"
        "For vhost w, allow max 1000 bytes per second.\n"
    )


def test_config_print_writes_the_limits_back() -> None:
    *_, printed = replies(
        "LIMIT CONN_RATE VHOST b 3",
        "LIMIT CONN_RATE VHOST a 0",
        "LIMIT CONN_RATE DEFAULT 5",
        "LIMIT DATA_RATE_ALARM DEFAULT 100",
        "LIMIT CONNECTIONS VHOST a 2",
        "LIMIT DATA_RATE VHOST a 1000",
        "LIMIT DISABLE DATA_RATE VHOST a",
        "CONFIG PRINT",
    )
    assert [line for line in printed.splitlines() if line.startswith("LIMIT")] == [
        "LIMIT CONN_RATE DEFAULT 5",
        "LIMIT CONN_RATE VHOST a 0",
        "LIMIT CONN_RATE VHOST b 3",
        "LIMIT DATA_RATE_ALARM DEFAULT 100",
        "LIMIT CONNECTIONS VHOST a 2",
    ]
