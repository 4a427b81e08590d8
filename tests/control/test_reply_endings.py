"""Every reply ends with its newline, and a mistake says what would have been valid.

amqpprox leaves the newline off several replies (``Vhost not provided.``), so a
shell prompt or the next line of a script's output runs on after them. Here every
error the grammar can give, and every error a command gives when it runs, is one
line that ends in ``\\n``.
"""

from __future__ import annotations

import itertools
import re

import pytest

from amqprouter.control.controller import Controller
from amqprouter.control.grammar import ParseError, help_text, parse
from amqprouter.control.grammar.line import VERBS
from tests.session.wire import router

# Every capitalised word HELP shows (subcommands, flags, modes), and words that are none.
_WORDS = sorted(set(re.findall(r"\b[A-Z][A-Z_-]+\b", help_text())) | {"FROB", "json", "-1"})


def _bad_lines() -> list[str]:
    """Each verb alone, with a wrong word, and with each word of HELP then 0..3 more."""
    lines = []
    for verb in VERBS:
        lines += [verb, f"{verb} FROB", f"{verb} FROB x y"]
        for word, extra in itertools.product(_WORDS, ("", " x", " x 1", " x y z")):
            lines.append(f"{verb} {word}{extra}")
    return lines


BAD_LINES = _bad_lines()


def test_every_grammar_error_is_one_line_ending_in_a_newline() -> None:
    errors = {}
    for line in BAD_LINES:
        result = parse(line)
        if isinstance(result, ParseError):
            errors[line] = result.reply
    # The lines above reach a few hundred distinct errors, for every verb.
    assert len(set(errors.values())) > 80
    # HELP and COMPLETE take any words.
    assert {line.split(" ", 1)[0] for line in errors} == set(VERBS) - {"HELP", "COMPLETE"}
    wrong = {line: reply for line, reply in errors.items() if not _one_line(reply)}
    assert wrong == {}


def _one_line(reply: str) -> bool:
    return reply.endswith("\n") and "\n" not in reply[:-1]


@pytest.mark.parametrize(
    ("line", "starts"),
    [
        # amqpprox's first words, then the word and the choices.
        ("STAT LISTEN json overview", "Filter specified incorrectly: 'overview'; valid filters: "),
        ("BACKEND FROB", "Subcommand 'FROB' not recognized; valid subcommands: ADD, ADD_DNS,"),
        ("FARM FROB", "Subcommand 'FROB' not recognized; valid subcommands: ADD, "),
        ("MAP FROB", "Unrecognized subcommand: 'FROB'; valid subcommands: BACKEND, FARM, "),
        ("VHOST FROB v", "Subcommand not recognised: 'FROB'; valid subcommands: PAUSE, "),
        ("LIMIT FROB", "Invalid subcommand provided for LIMIT command: 'FROB'; valid subcommands:"),
        (
            "LIMIT DISABLE FROB",
            "Invalid subcommand provided for LIMIT command: 'FROB'; valid types",
        ),
        ("TLS INGRESS FROB", "Unknown TLS subcommand 'FROB': expected KEY_FILE, "),
        ("TLS SIDEWAYS", "Direction must be INGRESS or EGRESS"),
        ("LISTEN FROB", "Unknown subcommand: 'FROB'; valid subcommands: START, START_SECURE, STOP"),
        ("LOG FROB 3", "Type to verb is not known: 'FROB'; valid types: CONSOLE, FILE"),
        ("AUTH FROB", "Unknown subcommand: 'FROB'; valid subcommands: SERVICE, ALWAYS_ALLOW, "),
        ("DATACENTER FROB", "Unknown subcommand: 'FROB'; valid subcommands: SET, PRINT"),
        ("CONFIG FROB", "Unknown subcommand 'FROB': expected PRINT, RELOAD or CHECK."),
        ("MAPHOSTNAME FROB", "Only DNS subcommand is supported."),
        ("STAT FROB", "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported."),
        ("FROB", "Unknown command 'FROB'. Send HELP for the list of commands."),
    ],
)
def test_a_wrong_word_is_answered_with_the_choices(line: str, starts: str) -> None:
    result = parse(line)
    assert isinstance(result, ParseError)
    assert result.reply.startswith(starts), result.reply
    assert _one_line(result.reply)


# Commands that parse but fail when they run, against a router with one backend
# ("fake") and nothing else.
RUNTIME_ERRORS = [
    "BACKEND ADD fake dc 127.0.0.1 5672",
    "BACKEND DELETE nosuch",
    "BACKEND DISABLE nosuch",
    "BACKEND ENABLE nosuch",
    "BACKEND DRAIN nosuch",
    "BACKEND CHECK nosuch ON",
    "FARM ADD f no-such-selector fake",
    "FARM ADD f round-robin nosuch",
    "FARM PARTITION nosuch datacenter-affinity",
    "FARM PARTITION f no-such-policy",
    "FARM ON_DOWN nosuch KEEP",
    "SESSION 999999 PAUSE",
    "LISTEN START_SECURE 1",
    "TLS INGRESS KEY_FILE /nonexistent.pem",
    "TLS INGRESS CIPHERS SET NO-SUCH-CIPHER",
    "STAT SEND 127.0.0.1 8125",  # no statistics in this router
    "FROB",
]


async def test_every_runtime_error_ends_in_a_newline() -> None:
    async with router(1) as (server, _port):
        controller = Controller(server, request_exit=lambda: None)
        replies = {line: await controller.handle(line) for line in RUNTIME_ERRORS}
    assert not [line for line, reply in replies.items() if reply.ok]
    # FARM ADD's missing backends take a line each, as in amqpprox.
    wrong = {line: reply.text for line, reply in replies.items() if not reply.text.endswith("\n")}
    assert wrong == {}
