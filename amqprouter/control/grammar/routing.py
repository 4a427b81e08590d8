"""The routing table's verbs: BACKEND, FARM and MAP."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import attrs

from amqprouter.control.commands import (
    BackendAdd,
    BackendCheckOff,
    BackendCheckOn,
    BackendDelete,
    BackendDisable,
    BackendDrain,
    BackendEnable,
    BackendPrint,
    Command,
    FarmAdd,
    FarmDelete,
    FarmOnDown,
    FarmPartition,
    FarmPrint,
    FarmSticky,
    FarmWeight,
    MapBackend,
    MapDefault,
    MapFarm,
    MapPool,
    MapPrint,
    MapRemoveDefault,
    MapUnmap,
    RuleAdd,
    RuleDelete,
    RulePrint,
)
from amqprouter.control.grammar.listen import networks_of
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    integer,
    not_recognized,
    port_number,
    subcommands,
    upper,
)
from amqprouter.routing import sticky
from amqprouter.routing.client_rules import MAX_PRIORITY
from amqprouter.routing.selectors import MAX_WEIGHT

# -- BACKEND --------------------------------------------------------------------------

_BACKEND_ARGUMENTS = "Arguments not correctly provided\n"
_BACKEND_FLAGS = ("SEND-PROXY", "SEND-PROXY-V2", "TLS")
_BACKEND_FLAG_EXPECTED = "expected SEND-PROXY, SEND-PROXY-V2 or TLS"


def _backend_add(*, dns: bool) -> Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        if len(args) < 4:
            return ParseError(_BACKEND_ARGUMENTS)
        name, datacenter, host, port_word, *flags = args
        if "*" in name:
            return ParseError(
                f"Backend name '{name}' holds '*', which marks a weight in FARM ADD "
                "(name*weight): name it without.\n"
            )
        port = port_number(port_word)
        if port is None:
            return ParseError(_BACKEND_ARGUMENTS)
        unknown = [flag for flag in flags if upper(flag) not in _BACKEND_FLAGS]
        if unknown:
            return ParseError(f"Unknown backend flag '{unknown[0]}': {_BACKEND_FLAG_EXPECTED}.\n")
        upper_flags = {upper(flag) for flag in flags}
        if {"SEND-PROXY", "SEND-PROXY-V2"} <= upper_flags:
            return ParseError("SEND-PROXY and SEND-PROXY-V2 exclude each other: pick one.\n")
        return BackendAdd(
            name,
            datacenter,
            host,
            port,
            send_proxy=2 if "SEND-PROXY-V2" in upper_flags else int("SEND-PROXY" in upper_flags),
            tls="TLS" in upper_flags,
            dns=dns,
        )

    return parse_args


def _backend_delete(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("DELETE requires a name argument\n")
    return BackendDelete(args[0])


# BACKEND CHECK (ours): the numbers after ON, in order, and the range each must be in.
_CHECK_NUMBERS = (
    ("interval_ms", 10, 3_600_000),
    ("fall", 1, 1000),
    ("rise", 1, 1000),
    ("timeout_ms", 10, 3_600_000),
)


def _backend_check(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("CHECK requires a backend name and ON or OFF.\n")
    name, state, *numbers = args
    match upper(state):
        case "OFF":
            if numbers:
                return ParseError("CHECK name OFF takes nothing after OFF.\n")
            return BackendCheckOff(name)
        case "ON":
            pass
        case _:
            return ParseError(f"Check state '{state}' not recognized: expected ON or OFF.\n")
    if len(numbers) > len(_CHECK_NUMBERS):
        return ParseError("CHECK name ON takes at most: interval_ms fall rise timeout_ms.\n")
    values: list[int] = []
    for word, (field, low, high) in zip(numbers, _CHECK_NUMBERS, strict=False):
        value = integer(word)
        if value is None or not low <= value <= high:
            return ParseError(f"Check {field} must be a whole number in {low}..{high}.\n")
        values.append(value)
    command = BackendCheckOn(name, *values)
    if len(values) < len(_CHECK_NUMBERS):
        # The timeout defaults to the interval, as HAProxy's check timeout does.
        command = attrs.evolve(command, timeout_ms=command.interval_ms)
    return command


def _backend_named(kind: type[BackendDisable] | type[BackendEnable], sub: str) -> Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        if not args:
            return ParseError(f"{sub} requires a name argument\n")
        return kind(args[0])

    return parse_args


_DRAIN_MODES = {"GRACEFUL": True, "FORCE": False}


def _backend_drain(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("DRAIN requires a name argument\n")
    graceful = _DRAIN_MODES.get(upper(args[1]) if len(args) > 1 else "GRACEFUL")
    if graceful is None:
        return ParseError("DRAIN mode must be GRACEFUL or FORCE.\n")
    return BackendDrain(args[0], graceful)


BACKEND = subcommands(
    {
        "ADD": _backend_add(dns=False),
        "ADD_DNS": _backend_add(dns=True),
        "DELETE": _backend_delete,
        "DISABLE": _backend_named(BackendDisable, "DISABLE"),
        "ENABLE": _backend_named(BackendEnable, "ENABLE"),
        "DRAIN": _backend_drain,
        "PRINT": lambda args: BackendPrint(),
        "CHECK": _backend_check,  # ours: active health checks
    },
    # amqpprox compares the empty word like any other: "Subcommand '' not recognized."
    missing=not_recognized(""),
    unknown=not_recognized,
)

# -- FARM -----------------------------------------------------------------------------


#: A member word with a weight: ``name*weight`` (FARM ADD).
_WEIGHTED_MEMBER = re.compile(r"(.+)\*([0-9]+)", re.DOTALL)
_WEIGHT_RANGE = f"0..{MAX_WEIGHT}"


def _weight(word: str) -> int | None:
    value = integer(word)
    return value if value is not None and 0 <= value <= MAX_WEIGHT else None


def _farm_add(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and selector must be provided.\n")
    members: list[str] = []
    weights: list[int] = []
    for word in args[2:]:
        if "*" not in word:
            members.append(word)
            weights.append(1)
            continue
        found = _WEIGHTED_MEMBER.fullmatch(word)
        weight = None if found is None or "*" in found[1] else _weight(found[2])
        if found is None or weight is None:
            return ParseError(
                f"Member '{word}' is not a backend name or name*weight (weight {_WEIGHT_RANGE}).\n"
            )
        members.append(found[1])
        weights.append(weight)
    # All 1 is no weight at all: the same command as without (CONFIG PRINT writes it so).
    return FarmAdd(args[0], args[1], tuple(members), () if set(weights) <= {1} else tuple(weights))


def _farm_weight(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 3:
        return ParseError("Farm name, member and weight must be provided.\n")
    weight = _weight(args[2])
    if weight is None:
        return ParseError(f"Weight '{args[2]}' is not a whole number in {_WEIGHT_RANGE}.\n")
    return FarmWeight(args[0], args[1], weight)


def _farm_partition(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and policy must be provided.\n")
    return FarmPartition(args[0], args[1])


_ON_DOWN_ACTIONS = {"DISCONNECT": True, "KEEP": False}


def _farm_on_down(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and DISCONNECT or KEEP must be provided.\n")
    disconnect = _ON_DOWN_ACTIONS.get(upper(args[1]))
    if disconnect is None:
        return ParseError(f"On-down action '{args[1]}' not found: expected DISCONNECT or KEEP.\n")
    return FarmOnDown(args[0], disconnect)


def _farm_delete(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Farm name not provided.\n")
    return FarmDelete(args[0])


def _farm_sticky(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and ON [seconds] or OFF must be provided.\n")
    name, state, *rest = args
    match upper(state):
        case "OFF":
            return FarmSticky(name, None)
        case "ON":
            if not rest:
                return FarmSticky(name, int(sticky.DEFAULT_SECONDS))
            seconds = integer(rest[0])
            if seconds is None or not 1 <= seconds <= sticky.MAX_SECONDS:
                return ParseError(
                    f"Sticky seconds '{rest[0]}' is not a whole number in "
                    f"1..{int(sticky.MAX_SECONDS)}.\n"
                )
            return FarmSticky(name, seconds)
    return ParseError(f"Sticky state '{state}' not recognized: expected ON or OFF.\n")


FARM = subcommands(
    {
        "ADD": _farm_add,
        "ADD_MANUAL": _farm_add,  # amqpprox keeps this old spelling for compatibility
        "PARTITION": _farm_partition,
        "DELETE": _farm_delete,
        "PRINT": lambda args: FarmPrint(),
        "ON_DOWN": _farm_on_down,  # ours: farm policy when a member goes down
        "WEIGHT": _farm_weight,  # ours: a member's weight (weighted selectors)
        "STICKY": _farm_sticky,  # ours: clients keep their member
    },
    missing=not_recognized(""),
    unknown=not_recognized,
)

# -- MAP ------------------------------------------------------------------------------


def _pattern_error(vhost: str) -> ParseError | None:
    # ``**`` matches what ``*`` does: two spellings of one pattern would be two mappings.
    if "**" in vhost:
        return ParseError(
            f"Vhost pattern '{vhost}' holds '**': write one '*' (it matches any run).\n"
        )
    return None


def _broker_vhost(kind: str, args: Sequence[str]) -> str | ParseError | None:
    """``AS broker-vhost`` after MAP's vhost and target: the vhost the broker opens.

    Another word after the target is the line's to refuse (``parse``: unused words)."""
    if len(args) < 3 or upper(args[2]) != "AS":
        return None
    if len(args) != 4:
        return ParseError(f"MAP {kind} ... AS needs one broker vhost name after AS.\n")
    return args[3]


def _map_backend(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Vhost and backend must be provided\n")
    renamed = _broker_vhost("BACKEND", args)
    if isinstance(renamed, ParseError):
        return renamed
    return _pattern_error(args[0]) or MapBackend(args[0], args[1], renamed)


def _map_farm(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Vhost and farm name must be provided\n")
    renamed = _broker_vhost("FARM", args)
    if isinstance(renamed, ParseError):
        return renamed
    return _pattern_error(args[0]) or MapFarm(args[0], args[1], renamed)


def _map_unmap(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Vhost not provided.\n")
    return MapUnmap(args[0])


def _map_default(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Farm name for default must be provided\n")
    return MapDefault(args[0])


_POOL_WORDS = {"ON": True, "OFF": False, "DEFAULT": None}


def _map_pool(args: Sequence[str]) -> Command | ParseError:
    if len(args) != 2 or upper(args[1]) not in _POOL_WORDS:
        return ParseError("MAP POOL needs a vhost and ON, OFF or DEFAULT.\n")
    return _pattern_error(args[0]) or MapPool(args[0], _POOL_WORDS[upper(args[1])])


MAP = subcommands(
    {
        "BACKEND": _map_backend,
        "FARM": _map_farm,
        "UNMAP": _map_unmap,
        "DEFAULT": _map_default,
        "REMOVE_DEFAULT": lambda args: MapRemoveDefault(),
        "POOL": _map_pool,
        "PRINT": lambda args: MapPrint(),
    },
    missing="Unrecognized subcommand.",
    unknown=lambda subcommand: "Unrecognized subcommand.",
)


# -- RULE (ours) ------------------------------------------------------------------------

_RULE_USAGE = (
    "RULE ADD needs: priority cidr[,cidr...] (FARM name | BACKEND name) [BREAK|CONTINUE].\n"
)
_RULE_KINDS: dict[str, Literal["farm", "backend"]] = {"FARM": "farm", "BACKEND": "backend"}
_ON_DOWN: dict[str, Literal["BREAK", "CONTINUE"]] = {"BREAK": "BREAK", "CONTINUE": "CONTINUE"}


def _priority(word: str) -> int | None:
    value = integer(word)
    return value if value is not None and 0 <= value <= MAX_PRIORITY else None


def _rule_add(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 4:
        return ParseError(_RULE_USAGE)
    priority = _priority(args[0])
    if priority is None:
        return ParseError(
            f"Rule priority '{args[0]}' is not a whole number in 0..{MAX_PRIORITY}.\n"
        )
    networks = networks_of("RULE", args[1])
    if isinstance(networks, ParseError):
        return networks
    kind = _RULE_KINDS.get(upper(args[2]))
    if kind is None:
        return ParseError(f"Rule target '{args[2]}' not recognized: expected FARM or BACKEND.\n")
    on_down: Literal["BREAK", "CONTINUE"] = "CONTINUE"
    if len(args) > 4:
        found = _ON_DOWN.get(upper(args[4]))
        if found is None:
            return ParseError(
                f"Rule action '{args[4]}' not recognized: expected BREAK or CONTINUE.\n"
            )
        on_down = found
    return RuleAdd(priority, networks, kind, args[3], on_down)


def _rule_delete(args: Sequence[str]) -> Command | ParseError:
    priority = _priority(args[0]) if args else None
    if priority is None:
        return ParseError(f"RULE DELETE needs a priority (0..{MAX_PRIORITY}).\n")
    return RuleDelete(priority)


RULE = subcommands(
    {"ADD": _rule_add, "DELETE": _rule_delete, "PRINT": lambda args: RulePrint()},
    missing="Unrecognized subcommand.",
    unknown=lambda subcommand: "Unrecognized subcommand.",
)
