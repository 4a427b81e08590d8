"""SESSION TRACE, SESSION CAPTURE and VHOST TRACE: the grammar, its errors and the round
trip through ``to_line`` (control/grammar/sessions.py)."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import (
    Command,
    SessionCapture,
    SessionControl,
    SessionTrace,
    TraceOptions,
    VhostTrace,
)
from amqprouter.control.grammar import ParseError, parse, to_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SESSION TRACE 7", SessionTrace(7)),
        ("session trace 7 on", SessionTrace(7)),
        ("SESSION 7 TRACE", SessionTrace(7)),  # the id first, as SESSION's other words
        ("SESSION TRACE 7 OFF", SessionTrace(7, on=False)),
        (
            "SESSION TRACE 7 ON TO /var/tmp/s7.trace BODIES 16 RATE 50 SECONDS 2.5",
            SessionTrace(7, True, TraceOptions("/var/tmp/s7.trace", 16, 50, 2.5)),
        ),
        (
            "SESSION TRACE 7 seconds 30 rate 10",
            SessionTrace(7, True, TraceOptions(None, 0, 10, 30)),
        ),
        ("SESSION CAPTURE 7 /tmp/s7.pcap", SessionCapture(7, "/tmp/s7.pcap")),
        ("SESSION 7 CAPTURE /tmp/s7.pcap SECONDS 10", SessionCapture(7, "/tmp/s7.pcap", 10.0)),
        ("VHOST TRACE orders", VhostTrace("orders")),
        ("VHOST TRACE 'my vhost' OFF", VhostTrace("my vhost", on=False)),
        ("VHOST TRACE / TO /tmp/v.trace", VhostTrace("/", True, TraceOptions("/tmp/v.trace"))),
        # Still SESSION's own subcommands, judged once the session is found.
        ("SESSION 7 PAUSE", SessionControl(7, "PAUSE")),
    ],
)
def test_valid_lines_and_their_round_trip(line: str, expected: Command) -> None:
    assert parse(line) == expected
    assert parse(to_line(expected)) == expected


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("SESSION TRACE", "Session not found.\n"),
        ("SESSION TRACE x", "Session not found.\n"),
        ("SESSION CAPTURE -1 /tmp/x", "Session not found.\n"),
        (
            "SESSION TRACE 7 LOUD",
            "Unknown SESSION TRACE option: 'LOUD'; valid options: TO, BODIES, RATE, SECONDS.\n",
        ),
        ("SESSION TRACE 7 OFF RATE 5", "SESSION TRACE OFF takes no options.\n"),
        ("SESSION TRACE 7 RATE 5 RATE 6", "SESSION TRACE: RATE is given twice.\n"),
        ("SESSION TRACE 7 BODIES", "SESSION TRACE BODIES needs a value.\n"),
        ("SESSION TRACE 7 TO s7.trace", "SESSION TRACE TO needs an absolute path.\n"),
        ("SESSION TRACE 7 BODIES 0", "SESSION TRACE BODIES takes a number from 1 to 4096.\n"),
        ("SESSION TRACE 7 RATE 100001", "SESSION TRACE RATE takes a number from 1 to 100000.\n"),
        ("SESSION TRACE 7 SECONDS 0", "SESSION TRACE SECONDS takes a number from 1 to 86400.\n"),
        ("SESSION TRACE 7 SECONDS 1e3", "SESSION TRACE SECONDS takes a number from 1 to 86400.\n"),
        ("SESSION CAPTURE 7", "SESSION CAPTURE needs a file (an absolute path).\n"),
        ("SESSION CAPTURE 7 s7.pcap", "SESSION CAPTURE needs an absolute path.\n"),
        (
            "SESSION CAPTURE 7 /tmp/x RATE 5",
            "SESSION CAPTURE takes only SECONDS s after the file.\n",
        ),
        (
            "SESSION CAPTURE 7 /tmp/x SECONDS 99999",
            "SESSION CAPTURE SECONDS takes a number from 1 to 86400.\n",
        ),
        ("VHOST TRACE", "Session not found. VHOST TRACE needs a vhost.\n"),
        ("VHOST TRACE v OFF TO /x", "VHOST TRACE OFF takes no options.\n"),
    ],
)
def test_errors(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply)
