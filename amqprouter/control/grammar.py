"""The control-command grammar: one text line in, one ``Command`` or ``ParseError`` out.

Pure functions, no I/O. The grammar, the case rules and every error text are
amqpprox's (reference/amqpprox.md section 1), so an amqpprox operator's scripts
work unchanged:

* The verb is the text up to the first space (a space, not any whitespace, as
  in amqpprox), upper-cased. An empty line is ``HELP``; an unknown verb is
  refused with ``Unknown command 'X'. Send HELP for the list of commands.``
  (amqpprox answers it with the whole HELP text, which names no mistake).
* The rest of the line is split on any run of whitespace (amqpprox reads it
  with ``>>`` stream extraction), so extra spaces and tabs between words are
  fine.
* Subcommands and BACKEND flags are upper-cased; names, vhosts, hosts,
  selectors and policies keep their case. Upper-casing is ASCII-only, like
  ``boost::to_upper`` in the C locale (``str.upper`` would turn a long s,
  U+017F, into ``S``).
* Words after the ones a command uses are refused (``Unexpected word 'x':
  'MAP UNMAP v' takes no more words.``), where amqpprox ignores them (``MAP
  UNMAP v extra`` unmaps ``v`` there). An ignored word is an option the operator
  believes is in force: ``LISTEN START 5673 ACCEPT-PROXI`` would start a listener
  that takes no PROXY header. HELP alone takes any words.
* No word may contain a control character (C0, DEL, C1), a Unicode line or
  paragraph separator or a bidi control (``amqprouter.text.unsafe_character``):
  ``Word 'b1\\u2028EXIT' contains \\u2028: no word may contain a control character, a
  line separator or a bidi control.`` amqpprox accepts them, and a name holding one
  forges lines in MAP PRINT or is read back by a ``--config`` file as two commands.
* Verbs, flags and words of amqpprox that this version does not honour yet
  (none in this version; the tables stay for what comes next)
  are refused with ``<WORD> is not supported yet: <what is missing>``.
* Whether a backend, farm, selector or policy exists is not the parser's
  business: that is checked when the command runs.

Differences from amqpprox (each fixes a quirk, or is new):

1. ``FARM ADD name selector`` with no backends creates an empty farm; amqpprox
   answers ``Farm name and selector must be provided.\\n``.
2. ``BACKEND ADD``/``ADD_DNS``: every word after the port must be
   ``SEND-PROXY``, ``SEND-PROXY-V2`` (ours: the binary v2 header) or ``TLS`` (any
   case, any order); anything else is refused with ``Unknown backend flag '<word>':
   expected SEND-PROXY, SEND-PROXY-V2 or TLS.\\n``.
   amqpprox reads two words there and silently ignores unknown ones (a typo
   such as ``TSL`` would quietly give a plain-text backend).
3. A port is a whole decimal word in 1..65535. amqpprox's BACKEND only checks
   port != 0, so ``-1`` passes and ``5672x`` reads as 5672; ours answers its
   usual ``Arguments not correctly provided``. LISTEN START likewise reads
   ``5673x`` as 5673; ours answers ``Invalid port provided.\\n``.
4. ``LISTEN STOP <port>`` with an invalid port answers ``Invalid port
   provided.\\n``; amqpprox stops *every* listener. Only a bare ``LISTEN STOP``
   stops them all.
5. ``LOG CONSOLE|FILE <level>``: the level must be a whole integer word in
   0..5, else ``Verbosity must be between 0 and 5.\\n`` (amqpprox takes any
   int, and reads ``3x`` as 3; a non-integer word still answers ``Command or
   verbosity not found.\\n``).
6. New verb ``CONFIG PRINT``: the configuration as the commands that rebuild
   it; ``CONFIG RELOAD``: re-read the ``--config`` file (control/reload.py). Errors
   ``No subcommand provided: expected PRINT or RELOAD.\\n`` and ``Unknown subcommand
   'X': expected PRINT or RELOAD.\\n``.
7. A line longer than ``MAX_LINE_LENGTH`` characters answers ``Command line
   too long.\\n``.
8. One trailing ``\\r`` is dropped, so a CRLF client works; amqpprox keeps it
   in the last word (``MAP PRINT\\r`` is then an unknown subcommand).
9. Trailing whitespace is insignificant: amqpprox's FARM ADD reads an empty
   backend name after a trailing space and answers ``Backend '' not found``.
10. New subcommands ``BACKEND CHECK name ON [interval_ms [fall [rise
    [timeout_ms]]]]`` / ``BACKEND CHECK name OFF`` and ``FARM ON_DOWN name
    DISCONNECT|KEEP`` (backend health, docs/health.md). Numbers are whole words
    in range; extra words are refused, as a misplaced number would be a mistake.
11. ``SESSION id UNPAUSE`` is new (amqpprox can only unpause a whole vhost).
    SESSION and VHOST keep amqpprox's error texts, including VHOST's ``Session not
    found.\n`` for a missing vhost or subcommand.
12. ``BACKEND DISABLE|ENABLE name`` and ``BACKEND DRAIN name [GRACEFUL|FORCE]`` are
    new (HAProxy's drain); a missing name answers ``<SUB> requires a name
    argument``, a bad DRAIN mode ``DRAIN mode must be GRACEFUL or FORCE.\n``.
13. ``EXIT GRACEFUL [seconds]`` is new: drain sessions, then exit. A bad number of
    seconds answers ``EXIT GRACEFUL takes a number of seconds.\n``; any other word
    after EXIT is refused, as after any command.
14. TLS: amqpprox ignores an unknown subcommand; ours is refused (``Unknown TLS
    subcommand ...``). ``CIPHERS PRINT|SET`` and the VERIFY_MODE words take any
    case. A file name is one word: more words after a file subcommand are refused
    (a name with spaces cannot be written on a control line). ``TLS (INGRESS|EGRESS)
    PRINT`` and ``MIN_VERSION 1.2|1.3`` are new (docs/tls.md).
15. LIMIT: the limit type after DISABLE is upper-cased like everywhere else (amqpprox
    leaves it as typed, so ``LIMIT DISABLE conn_rate ...`` fails there), DEFAULT and
    VHOST take any case, a number is a whole non-negative word (``>> uint`` reads
    ``5x`` as 5), ``DATA_RATE ... 0`` is refused (it would stall the client for
    ever), and ``CONNECTIONS`` (concurrent sessions per vhost) is new.
16. ``AUTH SERVICE host port target``: the target must start with ``/`` (``The http
    target must start with '/', e.g. /auth.\n``); amqpprox glues it to the port. A
    host holding URL syntax (``/?#@[]%\\``) is refused (``The hostname must be a host
    name or an IP address, without URL syntax.\n``).
17. Every error reply ends with its newline (amqpprox leaves it off several, such
    as ``Vhost not provided.``), and an unknown subcommand, type or filter is
    named with the valid choices after amqpprox's first words: ``Unrecognized
    subcommand: 'X'; valid subcommands: BACKEND, FARM, ...`` (``with_choices``).
"""

from __future__ import annotations

import decimal
import ipaddress
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, assert_never, get_args

import attrs

from amqprouter.control.commands import (
    AuthAlwaysAllow,
    AuthPrint,
    AuthService,
    BackendAdd,
    BackendCheckOff,
    BackendCheckOn,
    BackendDelete,
    BackendDisable,
    BackendDrain,
    BackendEnable,
    BackendPrint,
    Command,
    ConfigPrint,
    ConfigReload,
    Conn,
    DatacenterPrint,
    DatacenterSet,
    Exit,
    FarmAdd,
    FarmDelete,
    FarmOnDown,
    FarmPartition,
    FarmPrint,
    Help,
    LimitDisable,
    LimitPrint,
    LimitSet,
    ListenStart,
    ListenStartSecure,
    ListenStop,
    LogConsole,
    LogFile,
    MapBackend,
    MapDefault,
    MapFarm,
    MapHostnameDns,
    MapPrint,
    MapRemoveDefault,
    MapUnmap,
    SessionControl,
    StatListen,
    StatPerSource,
    StatSend,
    StatStopSend,
    TlsCiphersPrint,
    TlsCiphersSet,
    TlsDirection,
    TlsFile,
    TlsFileKind,
    TlsMinVersion,
    TlsPrint,
    TlsVerifyMode,
    TlsVerifyWord,
    VhostBackendDisconnect,
    VhostForceDisconnect,
    VhostPause,
    VhostPrint,
    VhostUnpause,
)
from amqprouter.observe.render import AXIS_FILTERS, WHOLE_FILTERS
from amqprouter.server.limits import LIMIT_KINDS, LimitKind
from amqprouter.text import escape, unsafe_character

# The control socket reads one line per command; 4096 characters is far more
# than any real command needs (names are single words) and keeps a runaway
# client from handing the parser megabytes.
MAX_LINE_LENGTH = 4096


@attrs.frozen
class ParseError:
    """A line that is not a valid command; ``reply`` is the exact text to send back."""

    reply: str


#: Whitespace as C's isspace() sees it in the C locale, which is what amqpprox's
#: ``>>`` extraction splits on; str.split() would also split on Unicode spaces. A
#: ``--config`` file's lines are stripped of these and nothing else.
WHITESPACE = " \t\n\v\f\r"
_WHITESPACE = re.compile(f"[{re.escape(WHITESPACE)}]+")

_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# An optionally signed decimal integer, as ``>> int`` reads one, but only as a
# whole word. At most 9 significant digits: a longer number is refused like an
# overflowing ``>> int`` is, and int() never sees a huge string.
_INTEGER = re.compile(r"([+-]?)0*([0-9]{1,9})")

# Parses the words after a verb, or after a subcommand.
_Parser = Callable[[Sequence[str]], Command | ParseError]


def _upper(word: str) -> str:
    return word.translate(_ASCII_UPPER)


def _integer(word: str) -> int | None:
    match = _INTEGER.fullmatch(word)
    if match is None:
        return None
    sign, digits = match.groups()
    return -int(digits) if sign == "-" else int(digits)


def _port(word: str) -> int | None:
    value = _integer(word)
    return value if value is not None and 1 <= value <= 65535 else None


_CAPITAL_WORDS = re.compile(r"[A-Z_]+")


def with_choices(
    sentence: str, choices: Sequence[str], *, word: str | None = None, what: str = "subcommands"
) -> str:
    """An error ``sentence`` (amqpprox's words) that also names ``word`` and the valid choices.

    ``Unknown subcommand.`` becomes ``Unknown subcommand: 'X'; valid subcommands: A, B.``:
    the reference's first words stay first (scripts match them), the word is named
    unless the sentence already quotes it, and the reply ends with its newline.
    """
    text = sentence.rstrip("\n").removesuffix(".")
    if word is not None and f"'{word}'" not in text:
        text += f": '{escape(word)}'"
    return f"{text}; valid {what}: {', '.join(choices)}.\n"


def _subcommands(
    table: Mapping[str, _Parser], *, missing: str, unknown: Callable[[str], str]
) -> _Parser:
    """A verb whose first word picks a subcommand from ``table``.

    ``missing`` and ``unknown`` are that verb's own error texts (amqpprox words
    them differently for every verb); the reply adds the word and the table's
    subcommands (``with_choices``), unless the text already names every one of
    them (STAT's ``Only LISTEN, SEND, ... are supported.``).
    """
    choices = list(table)

    def explain(sentence: str, word: str | None) -> str:
        if set(choices) <= set(_CAPITAL_WORDS.findall(sentence)):
            return sentence if sentence.endswith("\n") else sentence + "\n"
        return with_choices(sentence, choices, word=word)

    def parse_verb(args: Sequence[str]) -> Command | ParseError:
        if not args:
            return ParseError(explain(missing, None))
        subcommand = _upper(args[0])
        parse_args = table.get(subcommand)
        if parse_args is None:
            return ParseError(explain(unknown(subcommand), subcommand))
        return parse_args(args[1:])

    return parse_verb


# --------------------------------------------------------------------------- #
# BACKEND
# --------------------------------------------------------------------------- #

_BACKEND_ARGUMENTS = "Arguments not correctly provided\n"
_BACKEND_FLAGS = ("SEND-PROXY", "SEND-PROXY-V2", "TLS")
_BACKEND_FLAG_EXPECTED = "expected SEND-PROXY, SEND-PROXY-V2 or TLS"
# Flags the grammar knows (they are amqpprox's) but the router does not honour yet.
# Accepting one and connecting in plain text would lie to the operator, so each is
# refused with what is missing.
_BACKEND_FLAGS_NOT_YET: Mapping[str, str] = {}


def _backend_add(*, dns: bool) -> _Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        if len(args) < 4:
            return ParseError(_BACKEND_ARGUMENTS)
        name, datacenter, host, port_word, *flags = args
        port = _port(port_word)
        if port is None:
            return ParseError(_BACKEND_ARGUMENTS)
        unknown = [flag for flag in flags if _upper(flag) not in _BACKEND_FLAGS]
        if unknown:
            return ParseError(f"Unknown backend flag '{unknown[0]}': {_BACKEND_FLAG_EXPECTED}.\n")
        upper_flags = {_upper(flag) for flag in flags}
        for flag in _BACKEND_FLAGS:
            if flag in upper_flags and flag in _BACKEND_FLAGS_NOT_YET:
                return ParseError(_BACKEND_FLAGS_NOT_YET[flag])
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
    match _upper(state):
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
        value = _integer(word)
        if value is None or not low <= value <= high:
            return ParseError(f"Check {field} must be a whole number in {low}..{high}.\n")
        values.append(value)
    command = BackendCheckOn(name, *values)
    if len(values) < len(_CHECK_NUMBERS):
        # The timeout defaults to the interval, as HAProxy's check timeout does.
        command = attrs.evolve(command, timeout_ms=command.interval_ms)
    return command


def _not_recognized(subcommand: str) -> str:
    return f"Subcommand '{subcommand}' not recognized."


def _backend_named(kind: type[BackendDisable] | type[BackendEnable], sub: str) -> _Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        if not args:
            return ParseError(f"{sub} requires a name argument\n")
        return kind(args[0])

    return parse_args


_DRAIN_MODES = {"GRACEFUL": True, "FORCE": False}


def _backend_drain(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("DRAIN requires a name argument\n")
    graceful = _DRAIN_MODES.get(_upper(args[1]) if len(args) > 1 else "GRACEFUL")
    if graceful is None:
        return ParseError("DRAIN mode must be GRACEFUL or FORCE.\n")
    return BackendDrain(args[0], graceful)


_backend = _subcommands(
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
    missing=_not_recognized(""),
    unknown=_not_recognized,
)

# --------------------------------------------------------------------------- #
# FARM
# --------------------------------------------------------------------------- #


def _farm_add(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and selector must be provided.\n")
    return FarmAdd(args[0], args[1], tuple(args[2:]))


def _farm_partition(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and policy must be provided.\n")
    return FarmPartition(args[0], args[1])


_ON_DOWN_ACTIONS = {"DISCONNECT": True, "KEEP": False}


def _farm_on_down(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Farm name and DISCONNECT or KEEP must be provided.\n")
    disconnect = _ON_DOWN_ACTIONS.get(_upper(args[1]))
    if disconnect is None:
        return ParseError(f"On-down action '{args[1]}' not found: expected DISCONNECT or KEEP.\n")
    return FarmOnDown(args[0], disconnect)


def _farm_delete(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Farm name not provided.\n")
    return FarmDelete(args[0])


_farm = _subcommands(
    {
        "ADD": _farm_add,
        "ADD_MANUAL": _farm_add,  # amqpprox keeps this old spelling for compatibility
        "PARTITION": _farm_partition,
        "DELETE": _farm_delete,
        "PRINT": lambda args: FarmPrint(),
        "ON_DOWN": _farm_on_down,  # ours: farm policy when a member goes down
    },
    missing=_not_recognized(""),
    unknown=_not_recognized,
)

# --------------------------------------------------------------------------- #
# MAP
# --------------------------------------------------------------------------- #


def _map_backend(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Vhost and backend must be provided\n")
    return MapBackend(args[0], args[1])


def _map_farm(args: Sequence[str]) -> Command | ParseError:
    if len(args) < 2:
        return ParseError("Vhost and farm name must be provided\n")
    return MapFarm(args[0], args[1])


def _map_unmap(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Vhost not provided.\n")
    return MapUnmap(args[0])


def _map_default(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("Farm name for default must be provided\n")
    return MapDefault(args[0])


_map = _subcommands(
    {
        "BACKEND": _map_backend,
        "FARM": _map_farm,
        "UNMAP": _map_unmap,
        "DEFAULT": _map_default,
        "REMOVE_DEFAULT": lambda args: MapRemoveDefault(),
        "PRINT": lambda args: MapPrint(),
    },
    missing="Unrecognized subcommand.",
    unknown=lambda subcommand: "Unrecognized subcommand.",
)

# --------------------------------------------------------------------------- #
# LISTEN
# --------------------------------------------------------------------------- #

_INVALID_PORT = "Invalid port provided.\n"


_ACCEPT_PROXY_NEEDS_FROM = (
    "ACCEPT-PROXY needs FROM <balancer addresses>: a PROXY header names any client "
    "address its sender likes, so say which peers may send one, e.g. ACCEPT-PROXY FROM "
    "10.0.1.5,10.0.1.6 (docs/edge.md).\n"
)


def _listen_start(kind: type[ListenStart] | type[ListenStartSecure]) -> _Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        port = _port(args[0]) if args else None
        if port is None:
            return ParseError(_INVALID_PORT)
        proxy_from: tuple[str, ...] = ()
        allow: tuple[str, ...] = ()
        rest = list(args[1:])
        # Each option at most once, in any order; anything else is left for
        # _refuse_unused_words to name.
        while rest:
            word = _upper(rest[0])
            if word == "ACCEPT-PROXY" and not proxy_from:
                # A bare ACCEPT-PROXY would let anyone who reaches the port choose
                # their own address (and so pass ALLOW): the balancers must be named.
                if len(rest) < 2 or _upper(rest[1]) != "FROM":
                    return ParseError(_ACCEPT_PROXY_NEEDS_FROM)
                if len(rest) < 3:
                    return ParseError("FROM needs a list: ACCEPT-PROXY FROM cidr[,cidr...]\n")
                networks = _networks("FROM", rest[2])
                if isinstance(networks, ParseError):
                    return networks
                proxy_from = networks
                del rest[:3]
            elif word == "ALLOW" and not allow:
                if len(rest) < 2:
                    return ParseError("ALLOW needs a list: ALLOW cidr[,cidr...]\n")
                networks = _networks("ALLOW", rest[1])
                if isinstance(networks, ParseError):
                    return networks
                allow = networks
                del rest[:2]
            else:
                break
        return kind(port, proxy_from, allow)

    return parse_args


def _networks(option: str, text: str) -> tuple[str, ...] | ParseError:
    """``cidr[,cidr...]`` as canonical network texts ("10.0.0.0/8", "::1/128"), an
    IPv4-mapped one as the IPv4 network it means (``_ipv4_if_mapped``)."""
    networks: list[str] = []
    for item in text.split(","):
        try:
            network = _ipv4_if_mapped(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            return ParseError(f"{option} '{escape(item)}' is not a network (cidr): {exc}\n")
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _ipv4_if_mapped(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``::ffff:10.0.0.0/104`` as ``10.0.0.0/8``. An IPv4 client on a dual-stack listener
    is matched as IPv4 (``server.admission``), so a rule kept in its mapped form could
    never match anyone: it would lock everyone out without a word. A network wider than
    the mapped range (``::/0``) keeps its IPv6 meaning."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # every address of the mapped range has one
        return ipaddress.IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED.prefixlen))
    return network


def _listen_stop(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ListenStop(None)
    # amqpprox stops every listener when the port is invalid; a typo must not do that.
    port = _port(args[0])
    return ParseError(_INVALID_PORT) if port is None else ListenStop(port)


_listen = _subcommands(
    {
        "START": _listen_start(ListenStart),
        "START_SECURE": _listen_start(ListenStartSecure),
        "STOP": _listen_stop,
    },
    missing="No subcommand provided.\n",
    unknown=lambda subcommand: "Unknown subcommand.\n",
)

# --------------------------------------------------------------------------- #
# AUTH
# --------------------------------------------------------------------------- #


def _auth_service(args: Sequence[str]) -> Command | ParseError:
    # amqpprox's checks, in its order and words.
    if not args:
        return ParseError("No hostname specified.\n")
    port = _port(args[1]) if len(args) > 1 else None
    if port is None:
        return ParseError("Invalid port provided.\n")
    if len(args) < 3:
        return ParseError("No http target specified.\n")
    # Ours: amqpprox glues the target to the port, so "auth" would make
    # http://host:8080auth, a URL no request can go to.
    if not args[2].startswith("/"):
        return ParseError("The http target must start with '/', e.g. /auth.\n")
    # Ours: a host holding URL syntax would send the request somewhere else.
    if any(character in args[0] for character in "/?#@[]%\\"):
        return ParseError(
            "The hostname must be a host name or an IP address, without URL syntax.\n"
        )
    return AuthService(args[0], port, args[2])


_auth = _subcommands(
    {
        "SERVICE": _auth_service,
        "ALWAYS_ALLOW": lambda args: AuthAlwaysAllow(),
        "PRINT": lambda args: AuthPrint(),
    },
    missing="No subcommand provided.\n",
    unknown=lambda subcommand: "Unknown subcommand.\n",
)


# --------------------------------------------------------------------------- #
# DATACENTER, LOG, MAPHOSTNAME, CONFIG
# --------------------------------------------------------------------------- #

_datacenter = _subcommands(
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
    level = _integer(args[1]) if len(args) >= 2 else None
    if level is None:
        return ParseError(_LOG_USAGE)
    kind = _LOG_KINDS.get(_upper(args[0]))
    if kind is None:
        return ParseError(
            with_choices("Type to verb is not known.", list(_LOG_KINDS), word=args[0], what="types")
        )
    if not 0 <= level <= 5:
        return ParseError("Verbosity must be between 0 and 5.\n")
    return kind(level)


_maphostname = _subcommands(
    {"DNS": lambda args: MapHostnameDns()},
    missing="No subcommand specified.\n",
    unknown=lambda subcommand: "Only DNS subcommand is supported.\n",
)

# CONFIG is ours, so its errors name the valid subcommands.
_CONFIG_SUBCOMMANDS = "expected PRINT or RELOAD"

_config = _subcommands(
    {"PRINT": lambda args: ConfigPrint(), "RELOAD": lambda args: ConfigReload()},
    missing=f"No subcommand provided: {_CONFIG_SUBCOMMANDS}.\n",
    unknown=lambda subcommand: f"Unknown subcommand '{subcommand}': {_CONFIG_SUBCOMMANDS}.\n",
)

# --------------------------------------------------------------------------- #
# STAT
# --------------------------------------------------------------------------- #

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
    output = _upper(args[0])
    if output not in _STAT_OUTPUTS:
        return ParseError("json or human must be the type of output\n")
    if len(args) < 2:
        return StatListen(output.lower())
    term = args[1]
    # The filter names are the renderer's (observe.render), matched in any case.
    if _upper(term).lower() in WHOLE_FILTERS:
        return StatListen(output.lower(), _upper(term).lower())
    # amqpprox splits on "=" with boost's tokenizer, which drops empty tokens.
    tokens = [token for token in term.split("=") if token]
    if len(tokens) != 2:
        return ParseError(
            with_choices("Filter specified incorrectly.", _FILTERS, word=term, what="filters")
        )
    kind = _upper(tokens[0])
    if kind.lower() not in AXIS_FILTERS:
        # amqpprox prints this inside the stream, every interval; we refuse at once.
        return ParseError(with_choices(f"Unknown filter type: '{kind}'", _FILTERS, what="filters"))
    return StatListen(output.lower(), kind.lower(), tokens[1])


def _stat_send(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError("No output host specified.\n")
    if len(args) < 2 or _integer(args[1]) is None:
        return ParseError("No output port specified.\n")
    port = _port(args[1])
    if port is None:
        return ParseError(_INVALID_PORT)
    if args[2:] and [_upper(word) for word in args[2:]] != ["ALL"]:
        return ParseError("Filters aren't supported when sending metrics.\n")
    return StatSend(args[0], port)


def _stat_stop(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ParseError(with_choices("Missing stop type.", ["SEND"], what="types"))
    if args[0] != "SEND":  # case-sensitive in amqpprox
        return ParseError(f'Unrecognized argument for STOP: "{escape(args[0])}"; valid: SEND.\n')
    return StatStopSend()


def _stat_per_source(enabled: bool) -> _Parser:
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
_stat = _subcommands(
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

# --------------------------------------------------------------------------- #
# TLS
# --------------------------------------------------------------------------- #

_TLS_DIRECTIONS: Mapping[str, TlsDirection] = {"INGRESS": "INGRESS", "EGRESS": "EGRESS"}
_TLS_FILE_KINDS: Mapping[str, TlsFileKind] = {kind: kind for kind in get_args(TlsFileKind)}
_TLS_VERIFY_WORDS: Mapping[str, TlsVerifyWord] = {word: word for word in get_args(TlsVerifyWord)}
_TLS_MIN_VERSIONS: Mapping[str, Literal["1.2", "1.3"]] = {"1.2": "1.2", "1.3": "1.3"}
_TLS_SUBCOMMANDS = (
    "KEY_FILE, CERT_CHAIN_FILE, RSA_KEY_FILE, TMP_DH_FILE, CA_CERT_FILE, VERIFY_MODE, "
    "CIPHERS, MIN_VERSION or PRINT"
)


def _tls(args: Sequence[str]) -> Command | ParseError:
    direction = _TLS_DIRECTIONS.get(_upper(args[0])) if args else None
    if direction is None:
        return ParseError("Direction must be INGRESS or EGRESS\n")
    if len(args) < 2:
        return ParseError(f"TLS {direction} needs a subcommand: {_TLS_SUBCOMMANDS}.\n")
    subcommand, rest = _upper(args[1]), args[2:]
    kind = _TLS_FILE_KINDS.get(subcommand)
    if kind is not None:
        if not rest:
            return ParseError("File must be specified\n")
        if len(rest) > 1:
            # A control line is split on whitespace, so such a name cannot be one
            # word; taking the first word would load another file than meant.
            return ParseError(
                f"A TLS file name must be one word: '{' '.join(rest)}' has spaces in it; "
                "rename the file or link it under a name without spaces.\n"
            )
        return TlsFile(direction, kind, rest[0])
    match subcommand:
        case "VERIFY_MODE":
            modes: list[TlsVerifyWord] = []
            for word in rest:
                mode = _TLS_VERIFY_WORDS.get(_upper(word))
                if mode is None:
                    return ParseError(
                        with_choices(f"Unknown mode: {word}", list(_TLS_VERIFY_WORDS), what="modes")
                    )
                modes.append(mode)
            return TlsVerifyMode(direction, tuple(modes))
        case "CIPHERS":
            action = _upper(rest[0]) if rest else ""
            if action == "PRINT":
                return TlsCiphersPrint(direction)
            if action != "SET":
                return ParseError("CIPHERS takes PRINT or SET ciphersuite(:ciphersuite)*.\n")
            if len(rest) < 2:
                return ParseError("CIPHERS SET needs a cipher list.\n")
            return TlsCiphersSet(direction, rest[1])
        case "MIN_VERSION":
            version = _TLS_MIN_VERSIONS.get(rest[0]) if rest else None
            if version is None:
                return ParseError("MIN_VERSION must be 1.2 or 1.3.\n")
            return TlsMinVersion(direction, version)
        case "PRINT":
            return TlsPrint(direction)
    return ParseError(f"Unknown TLS subcommand '{subcommand}': expected {_TLS_SUBCOMMANDS}.\n")


# --------------------------------------------------------------------------- #
# LIMIT
# --------------------------------------------------------------------------- #

_LIMIT_KINDS: Mapping[str, LimitKind] = {kind: kind for kind in LIMIT_KINDS}
_LIMIT_INVALID = "Invalid subcommand provided for LIMIT command."
_LIMIT_SUBCOMMANDS = (*LIMIT_KINDS, "DISABLE", "PRINT")


def _limit_target(kind: str, args: Sequence[str]) -> tuple[str | None, Sequence[str]] | ParseError:
    """``DEFAULT`` (None) or ``VHOST name``, and the words after it."""
    target = _upper(args[0]) if args else ""
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
    subcommand = _upper(args[0])
    if subcommand == "PRINT":
        return LimitPrint(args[1] if len(args) > 1 else None)
    if subcommand == "DISABLE":
        if len(args) < 2:
            return ParseError(
                with_choices(
                    "No subcommand provided for LIMIT DISABLE command.", LIMIT_KINDS, what="types"
                )
            )
        kind = _LIMIT_KINDS.get(_upper(args[1]))
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
    value = _integer(rest[0]) if rest else None
    if kind.startswith("DATA_RATE"):
        if value is None or value < 0:
            return ParseError("Failed to read bytesPerSecond\n")
        if value == 0 and kind == "DATA_RATE":
            # amqpprox would stall such a client for ever; LIMIT CONN_RATE ... 0 refuses it.
            return ParseError("DATA_RATE must be at least 1 byte per second.\n")
    elif value is None or value < 0:
        return ParseError("Invalid numberOfConnections provided.\n")
    return LimitSet(kind, vhost, value)


# --------------------------------------------------------------------------- #
# SESSION, VHOST, EXIT
# --------------------------------------------------------------------------- #

_SESSION_NOT_FOUND = "Session not found.\n"


def _session(args: Sequence[str]) -> Command | ParseError:
    # amqpprox reads the id with ``>> uint64``: a missing or non-numeric id is id 0,
    # which no session has. Whether the subcommand exists is decided after the
    # session is found, as in amqpprox.
    session_id = _integer(args[0]) if args else None
    if session_id is None or session_id < 0:
        return ParseError(_SESSION_NOT_FOUND)
    return SessionControl(session_id, _upper(args[1]) if len(args) > 1 else "")


_VHOST_SUBCOMMANDS: Mapping[str, Callable[[str], Command]] = {
    "PAUSE": VhostPause,
    "UNPAUSE": VhostUnpause,
    "PRINT": lambda vhost: VhostPrint(),
    "BACKEND_DISCONNECT": VhostBackendDisconnect,
    "FORCE_DISCONNECT": VhostForceDisconnect,
}


def _vhost(args: Sequence[str]) -> Command | ParseError:
    subcommand = _upper(args[0]) if args else ""
    vhost = args[1] if len(args) > 1 else ""
    if not subcommand:
        # sic: amqpprox's text, kept first for scripts; then what was missing.
        return ParseError(with_choices(_SESSION_NOT_FOUND, list(_VHOST_SUBCOMMANDS)))
    make = _VHOST_SUBCOMMANDS.get(subcommand)
    if make is not None and not vhost and subcommand != "PRINT":
        return ParseError(f"Session not found. VHOST {subcommand} needs a vhost.\n")
    if make is None:
        return ParseError(
            with_choices("Subcommand not recognised.", list(_VHOST_SUBCOMMANDS), word=args[0])
        )
    return make(vhost)


# Seconds as a plain decimal word: 10, 2.5, 0.1.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def _exit(args: Sequence[str]) -> Command | ParseError:
    if not args or _upper(args[0]) != "GRACEFUL":
        return Exit()
    if len(args) < 2:
        return Exit(graceful=True)
    # Below 1e9 once read as a float, so that to_line writes it back in 9 digits.
    if not _SECONDS.fullmatch(args[1]) or not 0 < float(args[1]) < 1e9:
        return ParseError("EXIT GRACEFUL takes a number of seconds.\n")
    return Exit(graceful=True, seconds=float(args[1]))


# --------------------------------------------------------------------------- #
# verbs and HELP
# --------------------------------------------------------------------------- #

# Verb → parser of the words after it. A new verb adds its parser here and its line
# to _HELP_TEXTS below (and leaves _VERBS_NOT_YET, if it was there).
_VERBS: Mapping[str, _Parser] = {
    "AUTH": _auth,
    "BACKEND": _backend,
    "CONFIG": _config,
    "CONN": lambda args: Conn(),
    "DATACENTER": _datacenter,
    "EXIT": _exit,
    "FARM": _farm,
    "HELP": lambda args: Help(),
    "LIMIT": _limit,
    "LISTEN": _listen,
    "LOG": _log,
    "MAP": _map,
    "MAPHOSTNAME": _maphostname,
    "STAT": _stat,
    "SESSION": _session,
    "TLS": _tls,
    "VHOST": _vhost,
}

# Verbs of amqpprox that this version does not have: refused with what is missing,
# rather than answered with HELP as a typo is.
_VERBS_NOT_YET: Mapping[str, str] = {}

# Words of amqpprox's that a command would otherwise merely find unexpected.
_WORDS_NOT_YET: Mapping[str, str] = {}

# Verb → its HELP text, word for word amqpprox's (CONFIG is ours). HELP prints
# them sorted by verb, one ``VERB text`` line each, as amqpprox's std::map does.
_HELP_TEXTS: Mapping[str, str] = {
    "AUTH": "(SERVICE hostname port target | ALWAYS_ALLOW | PRINT) - Change authentication "
    "mechanism for connecting clients",
    "BACKEND": "(ADD name datacenter host port [SEND-PROXY|SEND-PROXY-V2] [TLS] | ADD_DNS name "
    "datacenter address port [SEND-PROXY|SEND-PROXY-V2] [TLS] | DELETE name | DISABLE name | "
    "ENABLE name | "
    "DRAIN name [GRACEFUL|FORCE] | PRINT"
    " | CHECK name (ON [interval_ms [fall [rise [timeout_ms]]]] | OFF)"
    ") - Change backend servers",
    "CONFIG": "(PRINT | RELOAD) - Print the current configuration as the commands that "
    "rebuild it, or re-read the --config file and apply what changed in it (as SIGHUP does)",
    "CONN": "Print the connected sessions",
    "DATACENTER": "SET name | PRINT",
    "EXIT": "[GRACEFUL [seconds]] - Exit the program gracefully (GRACEFUL: close every "
    "session cleanly first).",
    "FARM": "(ADD name selector backend* | PARTITION name policy | DELETE name | PRINT"
    " | ON_DOWN name (DISCONNECT | KEEP)"
    ") - Change farms",
    "HELP": "Print this help text.",
    # amqpprox's four LIMIT lines; CONNECTIONS is ours (its PR #91).
    "LIMIT": "(CONN_RATE_ALARM | CONN_RATE) (VHOST vhostName numberOfConnections | DEFAULT "
    "numberOfConnections) - Configure connection rate limits (normal or alarmonly) for incoming "
    "clients connections\n"
    "LIMIT (DATA_RATE_ALARM | DATA_RATE) (DEFAULT | VHOST vhostName) BytesPerSecond - Configure "
    "data rate limits or alarms for incoming client data\n"
    "LIMIT CONNECTIONS (VHOST vhostName | DEFAULT) numberOfConnections - Configure the most "
    "concurrent connections per vhost\n"
    "LIMIT DISABLE (CONN_RATE_ALARM | CONN_RATE | DATA_RATE_ALARM | DATA_RATE | CONNECTIONS) "
    "(VHOST vhostName | DEFAULT) - Disable configured limit thresholds\n"
    "LIMIT PRINT [vhostName] - Print the configured default limits or specific vhost limits",
    "LISTEN": "START port [ACCEPT-PROXY FROM cidr[,cidr...]] [ALLOW cidr[,cidr...]] | "
    "START_SECURE port [ACCEPT-PROXY FROM cidr[,cidr...]] [ALLOW cidr[,cidr...]] | STOP [port]",
    "LOG": "CONSOLE verbosity | FILE verbosity",
    "MAP": "(BACKEND vhost backend | FARM vhost name | UNMAP vhost | DEFAULT farmName | "
    "REMOVE_DEFAULT | PRINT) - Change mappings of resources to servers",
    "MAPHOSTNAME": "DNS - Set up mapping of IPs to hostnames",
    # Two HELP lines in amqpprox (two STAT handlers): the second keeps its own verb.
    "STAT": "(STOP SEND | SEND <host> <port> | (LISTEN (json|human) (overall|vhost=foo|"
    "backend=bar|source=baz|all|all-except-per-source|process|bufferpool)) - Output "
    "statistics\nSTAT (DISABLE|ENABLE) per-source - Enable/Disable internal collection of "
    "per-source statistics. Applies to all send/listeners",
    # amqpprox's text starts with a space (hence two after SESSION); UNPAUSE is ours.
    "SESSION": " id# (PAUSE|UNPAUSE|DISCONNECT_GRACEFUL|FORCE_DISCONNECT) - Control a "
    "particular session",
    # amqpprox's text; PRINT and MIN_VERSION are ours.
    "TLS": "(INGRESS | EGRESS) (KEY_FILE file | CERT_CHAIN_FILE file | RSA_KEY_FILE file | "
    "TMP_DH_FILE file | CA_CERT_FILE file | VERIFY_MODE mode* | CIPHERS (PRINT | SET "
    "ciphersuite(:ciphersuite)*) | MIN_VERSION (1.2 | 1.3) | PRINT)",
    "VHOST": "PAUSE vhost | UNPAUSE vhost | PRINT | BACKEND_DISCONNECT vhost | "
    "FORCE_DISCONNECT vhost",
}


def unknown_verb(verb: str) -> str:
    """The reply to a verb the grammar does not know (amqpprox answers with all of HELP)."""
    return f"Unknown command '{escape(verb)}'. Send HELP for the list of commands.\n"


def help_text() -> str:
    """The reply to HELP (and to an unknown verb or an empty line)."""
    return "".join(f"{verb} {text}\n" for verb, text in sorted(_HELP_TEXTS.items()))


# --------------------------------------------------------------------------- #
# parse and to_line
# --------------------------------------------------------------------------- #


def parse(line: str) -> Command | ParseError:
    """Parse one control line (its ``\\n`` or ``\\r\\n`` terminator optional).

    Returns:
        The command, ``Help()`` for an empty line, or a ``ParseError`` whose
        ``reply`` is the exact text to answer with (``unknown_verb`` for a verb
        the grammar does not know).
    """
    line = line.removesuffix("\n").removesuffix("\r")
    if len(line) > MAX_LINE_LENGTH:
        return ParseError("Command line too long.\n")
    verb, _, rest = line.partition(" ")
    upper_verb = _upper(verb)
    if upper_verb in _VERBS_NOT_YET:
        return ParseError(f"{upper_verb} is not supported yet: {_VERBS_NOT_YET[upper_verb]}\n")
    parse_verb = _VERBS.get(upper_verb)
    if parse_verb is None:
        if not line.strip(WHITESPACE):
            return Help()  # an empty line, as amqpprox answers it
        return ParseError(unknown_verb(verb))
    words = [word for word in _WHITESPACE.split(rest) if word]
    unsafe = _unsafe_word(words)
    if unsafe is not None:
        return unsafe
    command = parse_verb(words)
    if isinstance(command, ParseError | Help):
        return command
    return _refuse_unused_words(words, command)


def _unsafe_word(words: Sequence[str]) -> ParseError | None:
    """A refusal of the first word holding a control character or a line separator.

    Checked before any verb reads its words, so no name, vhost, host, selector or
    policy ever holds one: such a name would forge lines in MAP PRINT or BACKEND
    PRINT, and CONFIG PRINT would write a line that a ``--config`` file (or any
    reader that splits lines the Unicode way) reads back as two commands. Any other
    word holding one is refused too, and no error text ever echoes one raw.
    """
    for word in words:
        character = unsafe_character(word)
        if character is not None:
            return ParseError(
                f"Word '{escape(word)}' contains {escape(character)}: no word may contain "
                "a control character, a line separator or a bidi control.\n"
            )
    return None


def _refuse_unused_words(words: Sequence[str], command: Command) -> Command | ParseError:
    """``command``, unless the line had words after the ones it uses.

    amqpprox ignores such words; we refuse them, since an ignored word is an
    option the operator believes is in force (``LISTEN START 5673 ACCEPT-PROXI``
    would start a listener that takes no PROXY header). The canonical line says how many words the
    command uses: defaults only ever add words to it, never remove them.
    """
    used = _words(command)
    if len(words) <= len(used) - 1:  # ``used`` starts with the verb
        return command
    extra = words[len(used) - 1]
    not_yet = _WORDS_NOT_YET.get(_upper(extra))
    if not_yet is not None:
        return ParseError(f"{_upper(extra)} is not supported yet: {not_yet}\n")
    return ParseError(f"Unexpected word '{extra}': '{' '.join(used)}' takes no more words.\n")


def _listen_options(proxy_from: tuple[str, ...], allow: tuple[str, ...]) -> list[str]:
    words = ["ACCEPT-PROXY", "FROM", ",".join(proxy_from)] if proxy_from else []
    return words + (["ALLOW", ",".join(allow)] if allow else [])


def _words(command: Command) -> list[str]:
    match command:
        case BackendAdd():
            subcommand = "ADD_DNS" if command.dns else "ADD"
            flags = [
                flag
                for flag, wanted in (
                    ("SEND-PROXY", command.send_proxy == 1),
                    ("SEND-PROXY-V2", command.send_proxy == 2),
                    ("TLS", command.tls),
                )
                if wanted
            ]
            return [
                "BACKEND",
                subcommand,
                command.name,
                command.datacenter,
                command.host,
                str(command.port),
                *flags,
            ]
        case BackendDelete(name):
            return ["BACKEND", "DELETE", name]
        case BackendPrint():
            return ["BACKEND", "PRINT"]
        case BackendCheckOn(name, interval_ms, fall, rise, timeout_ms):
            numbers = [str(n) for n in (interval_ms, fall, rise, timeout_ms)]
            return ["BACKEND", "CHECK", name, "ON", *numbers]
        case BackendCheckOff(name):
            return ["BACKEND", "CHECK", name, "OFF"]
        case BackendDisable(name):
            return ["BACKEND", "DISABLE", name]
        case BackendEnable(name):
            return ["BACKEND", "ENABLE", name]
        case BackendDrain(name, graceful):
            return ["BACKEND", "DRAIN", name, "GRACEFUL" if graceful else "FORCE"]
        case SessionControl(session_id, action):
            return ["SESSION", str(session_id)] + ([action] if action else [])
        case VhostPause(vhost):
            return ["VHOST", "PAUSE", vhost]
        case VhostUnpause(vhost):
            return ["VHOST", "UNPAUSE", vhost]
        case VhostPrint():
            return ["VHOST", "PRINT"]
        case VhostBackendDisconnect(vhost):
            return ["VHOST", "BACKEND_DISCONNECT", vhost]
        case VhostForceDisconnect(vhost):
            return ["VHOST", "FORCE_DISCONNECT", vhost]
        case FarmAdd(name, selector, backends):
            return ["FARM", "ADD", name, selector, *backends]
        case FarmPartition(name, policy):
            return ["FARM", "PARTITION", name, policy]
        case FarmDelete(name):
            return ["FARM", "DELETE", name]
        case FarmPrint():
            return ["FARM", "PRINT"]
        case FarmOnDown(name, disconnect):
            return ["FARM", "ON_DOWN", name, "DISCONNECT" if disconnect else "KEEP"]
        case MapBackend(vhost, backend):
            return ["MAP", "BACKEND", vhost, backend]
        case MapFarm(vhost, farm):
            return ["MAP", "FARM", vhost, farm]
        case MapUnmap(vhost):
            return ["MAP", "UNMAP", vhost]
        case MapDefault(farm):
            return ["MAP", "DEFAULT", farm]
        case MapRemoveDefault():
            return ["MAP", "REMOVE_DEFAULT"]
        case MapPrint():
            return ["MAP", "PRINT"]
        case ListenStart(port, proxy_from, allow):
            return ["LISTEN", "START", str(port), *_listen_options(proxy_from, allow)]
        case ListenStartSecure(port, proxy_from, allow):
            return ["LISTEN", "START_SECURE", str(port), *_listen_options(proxy_from, allow)]
        case ListenStop(port):
            return ["LISTEN", "STOP"] + ([] if port is None else [str(port)])
        case DatacenterSet(name):
            # An empty name is a bare SET, which parses back to "".
            return ["DATACENTER", "SET"] + ([name] if name else [])
        case DatacenterPrint():
            return ["DATACENTER", "PRINT"]
        case LogConsole(level):
            return ["LOG", "CONSOLE", str(level)]
        case LogFile(level):
            return ["LOG", "FILE", str(level)]
        case MapHostnameDns():
            return ["MAPHOSTNAME", "DNS"]
        case ConfigPrint():
            return ["CONFIG", "PRINT"]
        case ConfigReload():
            return ["CONFIG", "RELOAD"]
        case StatListen(output, kind, value):
            return ["STAT", "LISTEN", output, f"{kind}={value}" if value else kind]
        case StatSend(host, port):
            return ["STAT", "SEND", host, str(port)]
        case StatStopSend():
            return ["STAT", "STOP", "SEND"]
        case StatPerSource(enabled):
            return ["STAT", "ENABLE" if enabled else "DISABLE", "per-source"]
        case Conn():
            return ["CONN"]
        case Exit(graceful, seconds):
            if not graceful:
                return ["EXIT"]
            return ["EXIT", "GRACEFUL"] + ([] if seconds is None else [_decimal(seconds)])
        case TlsFile(direction, kind, path):
            return ["TLS", direction, kind, path]
        case TlsVerifyMode(direction, modes):
            return ["TLS", direction, "VERIFY_MODE", *modes]
        case TlsCiphersSet(direction, ciphers):
            return ["TLS", direction, "CIPHERS", "SET", ciphers]
        case TlsCiphersPrint(direction):
            return ["TLS", direction, "CIPHERS", "PRINT"]
        case TlsMinVersion(direction, version):
            return ["TLS", direction, "MIN_VERSION", version]
        case TlsPrint(direction):
            return ["TLS", direction, "PRINT"]
        case LimitSet(kind, vhost, value):
            return ["LIMIT", kind, *_limit_target_words(vhost), str(value)]
        case LimitDisable(kind, vhost):
            return ["LIMIT", "DISABLE", kind, *_limit_target_words(vhost)]
        case LimitPrint(vhost):
            return ["LIMIT", "PRINT"] + ([] if vhost is None else [vhost])
        case AuthService(host, port, target):
            return ["AUTH", "SERVICE", host, str(port), target]
        case AuthAlwaysAllow():
            return ["AUTH", "ALWAYS_ALLOW"]
        case AuthPrint():
            return ["AUTH", "PRINT"]
        case Help():
            return ["HELP"]
        case _:
            assert_never(command)


def _limit_target_words(vhost: str | None) -> list[str]:
    return ["DEFAULT"] if vhost is None else ["VHOST", vhost]


def _decimal(number: float) -> str:
    """``number`` as the plain decimal ``_SECONDS`` reads: the shortest digits that read
    back as the same float (``repr``), never an exponent (``:g`` wrote ``1e-07``), and
    a whole number without ``.0``."""
    return format(decimal.Decimal(repr(number)), "f").removesuffix(".0")


def to_line(command: Command) -> str:
    """The command line (without ``\\n``) that ``parse`` turns back into ``command``.

    CONFIG PRINT writes the configuration with this, and a ``--config`` file
    is read back with ``parse``, so ``parse(to_line(c)) == c`` must hold for
    every command.

    Raises:
        ValueError: ``command`` holds a value no command line can carry (an
            empty name, a name with whitespace in it, a port or level out of
            range). The round trip itself is checked, so nothing that would
            read back differently ever leaves here.
    """
    line = " ".join(_words(command))
    if parse(line) != command:
        raise ValueError(f"{command!r} cannot be written as a control command line")
    return line
