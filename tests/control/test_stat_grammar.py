"""STAT's grammar: every form, every error text (reference/amqpprox.md section 1, STAT)."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import (
    Command,
    StatListen,
    StatPerSource,
    StatSend,
    StatStopSend,
)
from amqprouter.control.grammar import ParseError, parse, to_line

VALID: list[tuple[str, Command]] = [
    ("STAT LISTEN json", StatListen("json", "all")),
    ("stat listen HUMAN", StatListen("human", "all")),
    ("STAT LISTEN json all", StatListen("json", "all")),
    ("STAT LISTEN json ALL-EXCEPT-PER-SOURCE", StatListen("json", "all-except-per-source")),
    ("STAT LISTEN human Overall", StatListen("human", "overall")),
    ("STAT LISTEN json process", StatListen("json", "process")),
    ("STAT LISTEN json bufferpool", StatListen("json", "bufferpool")),
    # The type is case-insensitive, the value exact.
    ("STAT LISTEN json vhost=/", StatListen("json", "vhost", "/")),
    ("STAT LISTEN json VHOST=Orders", StatListen("json", "vhost", "Orders")),
    ("STAT LISTEN json backend=127.0.0.1_5672", StatListen("json", "backend", "127.0.0.1_5672")),
    ("STAT LISTEN human source=10.0.0.1", StatListen("human", "source", "10.0.0.1")),
    # boost's tokenizer drops empty tokens: "vhost==v" is vhost v.
    ("STAT LISTEN json vhost==v", StatListen("json", "vhost", "v")),
    ("STAT SEND statsd.example 8125", StatSend("statsd.example", 8125)),
    ("STAT STOP SEND", StatStopSend()),
    ("stat stop SEND", StatStopSend()),
    ("STAT ENABLE per-source", StatPerSource(True)),
    ("STAT disable PER-SOURCE", StatPerSource(False)),
]

ONLY = "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported.\n"

FILTERS = (
    "all, all-except-per-source, overall, process, bufferpool, vhost=<vhost>, backend=<backend>, "
    "source=<host>"
)

ERRORS: list[tuple[str, str]] = [
    ("STAT", ONLY),
    ("STAT FOO", ONLY),
    ("STAT LISTEN", "No output type specified; valid types: json, human.\n"),
    ("STAT LISTEN xml", "json or human must be the type of output\n"),
    (
        "STAT LISTEN json vhost",
        f"Filter specified incorrectly: 'vhost'; valid filters: {FILTERS}.\n",
    ),
    (
        "STAT LISTEN json nonsense",
        f"Filter specified incorrectly: 'nonsense'; valid filters: {FILTERS}.\n",
    ),
    (
        "STAT LISTEN json a=b=c",
        f"Filter specified incorrectly: 'a=b=c'; valid filters: {FILTERS}.\n",
    ),
    (
        "STAT LISTEN json vhost=",
        f"Filter specified incorrectly: 'vhost='; valid filters: {FILTERS}.\n",
    ),
    ("STAT LISTEN json color=red", f"Unknown filter type: 'COLOR'; valid filters: {FILTERS}.\n"),
    ("STAT SEND", "No output host specified.\n"),
    ("STAT SEND host", "No output port specified.\n"),
    ("STAT SEND host port", "No output port specified.\n"),
    ("STAT SEND host 0", "Invalid port provided.\n"),
    ("STAT SEND host 65536", "Invalid port provided.\n"),
    ("STAT SEND host 8125 overall", "Filters aren't supported when sending metrics.\n"),
    ("STAT SEND host 8125 vhost=v", "Filters aren't supported when sending metrics.\n"),
    ("STAT STOP", "Missing stop type; valid types: SEND.\n"),
    ("STAT STOP send", 'Unrecognized argument for STOP: "send"; valid: SEND.\n'),
    ("STAT STOP LISTEN", 'Unrecognized argument for STOP: "LISTEN"; valid: SEND.\n'),
    ("STAT ENABLE", "Missing enable/disable type; valid types: per-source.\n"),
    ("STAT DISABLE", "Missing enable/disable type; valid types: per-source.\n"),
    (
        "STAT ENABLE per-vhost",
        'Unrecognized argument for ENABLE: "per-vhost"; valid: per-source.\n',
    ),
    ("STAT DISABLE x", 'Unrecognized argument for DISABLE: "x"; valid: per-source.\n'),
]


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_parse_valid(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(("line", "reply"), ERRORS)
def test_error_reply_is_exact(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply)


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_round_trip(line: str, expected: Command) -> None:
    assert parse(to_line(expected)) == expected
