"""STAT: statistics streamed to the caller or sent to StatsD."""

from __future__ import annotations

from collections.abc import Sequence

from amqprouter.control.commands import (
    Command,
    StatListen,
    StatPerSource,
    StatSend,
    StatStopSend,
)
from amqprouter.control.grammar.words import (
    INVALID_PORT,
    ParseError,
    Parser,
    integer,
    port_number,
    subcommands,
    upper,
    with_choices,
)
from amqprouter.observe.render import AXIS_FILTERS, WHOLE_FILTERS
from amqprouter.text import escape

_STAT_OUTPUTS = ("JSON", "HUMAN")
#: What an error lists as the valid filters, in HELP's order.
_FILTERS = (
    *WHOLE_FILTERS,
    *(f"{axis}=<{'host' if axis == 'source' else axis}>" for axis in AXIS_FILTERS),
)


def _stat_listen(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError(
            with_choices("No output type specified.", ["json", "human"], what="types")
        )
    output = upper(args[0])
    if output not in _STAT_OUTPUTS:
        return ParseError("json or human must be the type of output\n")
    if len(args) < 2:
        return StatListen(output.lower())
    term = args[1]
    # The filter names are the renderer's (observe.render), matched in any case.
    if upper(term).lower() in WHOLE_FILTERS:
        return StatListen(output.lower(), upper(term).lower())
    # amqpprox splits on "=" with boost's tokenizer, which drops empty tokens.
    tokens = [token for token in term.split("=") if token]
    if len(tokens) != 2:
        return ParseError(
            with_choices("Filter specified incorrectly.", _FILTERS, word=term, what="filters")
        )
    kind = upper(tokens[0])
    if kind.lower() not in AXIS_FILTERS:
        # amqpprox prints this inside the stream, every interval; we refuse at once.
        return ParseError(with_choices(f"Unknown filter type: '{kind}'", _FILTERS, what="filters"))
    return StatListen(output.lower(), kind.lower(), tokens[1])


def _stat_send(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("No output host specified.\n")
    if len(args) < 2 or integer(args[1]) is None:
        return ParseError("No output port specified.\n")
    port = port_number(args[1])
    if port is None:
        return ParseError(INVALID_PORT)
    if args[2:] and [upper(word) for word in args[2:]] != ["ALL"]:
        return ParseError("Filters aren't supported when sending metrics.\n")
    return StatSend(args[0], port)


def _stat_stop(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError(with_choices("Missing stop type.", ["SEND"], what="types"))
    if args[0] != "SEND":  # case-sensitive in amqpprox
        return ParseError(f'Unrecognized argument for STOP: "{escape(args[0])}"; valid: SEND.\n')
    return StatStopSend()


def _stat_per_source(enabled: bool) -> Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        if not args:
            return ParseError(
                with_choices("Missing enable/disable type.", ["per-source"], what="types")
            )
        if args[0].lower() != "per-source":
            subcommand = "ENABLE" if enabled else "DISABLE"
            return ParseError(
                f'Unrecognized argument for {subcommand}: "{escape(args[0])}"; valid: per-source.\n'
            )
        return StatPerSource(enabled)

    return parse_args


_STAT_ONLY = "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported.\n"
STAT = subcommands(
    {
        "LISTEN": _stat_listen,
        "SEND": _stat_send,
        "STOP": _stat_stop,
        "ENABLE": _stat_per_source(True),
        "DISABLE": _stat_per_source(False),
    },
    missing=_STAT_ONLY,
    unknown=lambda subcommand: _STAT_ONLY,
)
