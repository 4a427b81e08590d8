"""The router process's own verbs: DATACENTER, LOG, MAPHOSTNAME, CONFIG and EXIT."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from amqprouter.control.commands import (
    Command,
    Complete,
    ConfigCheck,
    ConfigPrint,
    ConfigReload,
    DatacenterPrint,
    DatacenterSet,
    Exit,
    LogConsole,
    LogFile,
    MapHostnameDns,
)
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    integer,
    subcommands,
    upper,
    with_choices,
)

DATACENTER = subcommands(
    {
        # A bare SET clears the datacenter, as in amqpprox.
        "SET": lambda args: DatacenterSet(args[0] if args else ""),
        "PRINT": lambda args: DatacenterPrint(),
    },
    missing="No subcommand provided.\n",
    unknown=lambda subcommand: "Unknown subcommand.\n",
)

_LOG_KINDS: Mapping[str, type[LogConsole] | type[LogFile]] = {
    "CONSOLE": LogConsole,
    "FILE": LogFile,
}


_LOG_USAGE = "Command or verbosity not found; usage: LOG (CONSOLE | FILE) verbosity (0..5).\n"


def _log(args: Sequence[str]) -> Command | ParseError:
    # amqpprox reads both words before looking at either, so a missing level
    # is reported before an unknown subcommand.
    level = integer(args[1]) if len(args) >= 2 else None
    if level is None:
        return ParseError(_LOG_USAGE)
    kind = _LOG_KINDS.get(upper(args[0]))
    if kind is None:
        return ParseError(
            with_choices("Type to verb is not known.", list(_LOG_KINDS), word=args[0], what="types")
        )
    if not 0 <= level <= 5:
        return ParseError("Verbosity must be between 0 and 5.\n")
    return kind(level)


MAPHOSTNAME = subcommands(
    {"DNS": lambda args: MapHostnameDns()},
    missing="No subcommand specified.\n",
    unknown=lambda subcommand: "Only DNS subcommand is supported.\n",
)

# CONFIG is ours, so its errors name the valid subcommands.
_CONFIG_SUBCOMMANDS = "expected PRINT, RELOAD or CHECK"

CONFIG = subcommands(
    {
        "PRINT": lambda args: ConfigPrint(),
        "RELOAD": lambda args: ConfigReload(),
        # The file as the router reads it (relative to the router's working directory);
        # none: the router's own --config file.
        "CHECK": lambda args: ConfigCheck(args[0] if args else None),
    },
    missing=f"No subcommand provided: {_CONFIG_SUBCOMMANDS}.\n",
    unknown=lambda subcommand: f"Unknown subcommand '{subcommand}': {_CONFIG_SUBCOMMANDS}.\n",
)


# Seconds as a plain decimal word: 10, 2.5, 0.1.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def _exit(args: Sequence[str]) -> Command | ParseError:
    if not args or upper(args[0]) != "GRACEFUL":
        return Exit()
    if len(args) < 2:
        return Exit(graceful=True)
    # Below 1e9 once read as a float, so that to_line writes it back in 9 digits.
    if not _SECONDS.fullmatch(args[1]) or not 0 < float(args[1]) < 1e9:
        return ParseError("EXIT GRACEFUL takes a number of seconds.\n")
    return Exit(graceful=True, seconds=float(args[1]))


LOG: Parser = _log
COMPLETE: Parser = lambda args: Complete(tuple(args))  # noqa: E731 - as the other verbs
EXIT: Parser = _exit
