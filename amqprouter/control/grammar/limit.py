"""LIMIT: connection-rate, data-rate and concurrent-connection limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amqprouter.control.commands import (
    Command,
    LimitDisable,
    LimitPrint,
    LimitSet,
)
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    integer,
    upper,
    with_choices,
)
from amqprouter.server.limits import LIMIT_KINDS, LimitKind

_LIMIT_KINDS: Mapping[str, LimitKind] = {kind: kind for kind in LIMIT_KINDS}
_LIMIT_INVALID = "Invalid subcommand provided for LIMIT command."
_LIMIT_SUBCOMMANDS = (*LIMIT_KINDS, "DISABLE", "PRINT")


def _limit_target(kind: str, args: Sequence[str]) -> tuple[str | None, Sequence[str]] | ParseError:
    """``DEFAULT`` (None) or ``VHOST name``, and the words after it."""
    target = upper(args[0]) if args else ""
    if target == "DEFAULT":
        return None, args[1:]
    if target == "VHOST" and len(args) > 1:
        return args[1], args[2:]
    return ParseError(f"Failed to read (VHOST vhostName | DEFAULT) for {kind}\n")


def _limit(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError(
            with_choices("No subcommand provided for LIMIT command.", _LIMIT_SUBCOMMANDS)
        )
    subcommand = upper(args[0])
    if subcommand == "PRINT":
        return LimitPrint(args[1] if len(args) > 1 else None)
    if subcommand == "DISABLE":
        if len(args) < 2:
            return ParseError(
                with_choices(
                    "No subcommand provided for LIMIT DISABLE command.", LIMIT_KINDS, what="types"
                )
            )
        kind = _LIMIT_KINDS.get(upper(args[1]))
        if kind is None:
            return ParseError(with_choices(_LIMIT_INVALID, LIMIT_KINDS, word=args[1], what="types"))
        target = _limit_target(kind, args[2:])
        if isinstance(target, ParseError):
            return target
        return LimitDisable(kind, target[0])
    kind = _LIMIT_KINDS.get(subcommand)
    if kind is None:
        return ParseError(with_choices(_LIMIT_INVALID, _LIMIT_SUBCOMMANDS, word=args[0]))
    target = _limit_target(kind, args[1:])
    if isinstance(target, ParseError):
        return target
    vhost, rest = target
    value = integer(rest[0]) if rest else None
    if kind.startswith("DATA_RATE"):
        if value is None or value < 0:
            return ParseError("Failed to read bytesPerSecond\n")
        if value == 0 and kind == "DATA_RATE":
            # amqpprox would stall such a client for ever; LIMIT CONN_RATE ... 0 refuses it.
            return ParseError("DATA_RATE must be at least 1 byte per second.\n")
    elif value is None or value < 0:
        return ParseError("Invalid numberOfConnections provided.\n")
    return LimitSet(kind, vhost, value)


LIMIT: Parser = _limit
