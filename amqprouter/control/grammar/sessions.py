"""SESSION and VHOST: pausing, disconnecting, tracing and capturing sessions, one or a
vhost's.

TRACE and CAPTURE are ours: ``SESSION TRACE id``, ``SESSION CAPTURE id file`` and
``VHOST TRACE vhost``, each word after the subcommand as docs/control.md lists it.
As the other SESSION subcommands come after the id, ``SESSION id TRACE ...`` and
``SESSION id CAPTURE ...`` are read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from amqprouter.control.commands import (
    CONN_SORT_FIELDS,
    Command,
    Conn,
    SessionCapture,
    SessionControl,
    SessionTrace,
    TraceOptions,
    VhostBackendDisconnect,
    VhostForceDisconnect,
    VhostPause,
    VhostPrint,
    VhostTrace,
    VhostUnpause,
)
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    integer,
    upper,
    with_choices,
)
from amqprouter.session import capture, trace

_SESSION_NOT_FOUND = "Session not found.\n"
#: A session id is a uint64 in amqpprox; ours reach past 9 digits with --workers (a
#: worker's ids start at its serial number << 32, amqprouter/fleet/role.py).
_SESSION_ID = re.compile(r"\+?0*([0-9]{1,20})")


def _session_id(word: str | None) -> int | None:
    match = _SESSION_ID.fullmatch(word) if word is not None else None
    session_id = int(match.group(1)) if match else None
    return None if session_id is None or session_id >= 1 << 64 else session_id


def _session(args: Sequence[str]) -> Command | ParseError:
    # amqpprox reads the id with ``>> uint64``: a missing or non-numeric id is id 0,
    # which no session has. Whether the subcommand exists is decided after the
    # session is found, as in amqpprox.
    first = upper(args[0]) if args else ""
    if first in _WATCHES:  # SESSION TRACE id ...: the id after the subcommand
        session_id = _session_id(args[1] if len(args) > 1 else None)
        rest = args[2:]
    else:
        session_id = _session_id(args[0] if args else None)
        first = upper(args[1]) if len(args) > 1 else ""
        rest = args[2:]
    if session_id is None:
        return ParseError(_SESSION_NOT_FOUND)
    if first == "TRACE":
        tail = _trace_tail("SESSION TRACE", rest)
        return tail if isinstance(tail, ParseError) else SessionTrace(session_id, *tail)
    if first == "CAPTURE":
        return _capture(session_id, rest)
    return SessionControl(session_id, first)


_WATCHES = ("TRACE", "CAPTURE")
#: A trace's options, each followed by its value (``TO file``, ``BODIES n``...).
TRACE_OPTIONS = ("TO", "BODIES", "RATE", "SECONDS")


def _trace_tail(what: str, args: Sequence[str]) -> tuple[bool, TraceOptions] | ParseError:
    """``[ON|OFF] [TO file] [BODIES n] [RATE n] [SECONDS s]``, the options in any order."""
    rest = list(args)
    on = True
    if rest and upper(rest[0]) in ("ON", "OFF"):
        on = upper(rest.pop(0)) == "ON"
    values: dict[str, str] = {}
    while rest:
        word = upper(rest.pop(0))
        if word not in TRACE_OPTIONS:
            return ParseError(
                with_choices(f"Unknown {what} option.", TRACE_OPTIONS, word=word, what="options")
            )
        if not on:
            return ParseError(f"{what} OFF takes no options.\n")
        if word in values:
            return ParseError(f"{what}: {word} is given twice.\n")
        if not rest:
            return ParseError(f"{what} {word} needs a value.\n")
        values[word] = rest.pop(0)
    path = values.get("TO")
    if path is not None and not path.startswith("/"):
        return ParseError(f"{what} TO needs an absolute path.\n")
    bodies = _bounded(values.get("BODIES"), trace.MAX_BODIES)
    rate = _bounded(values.get("RATE"), trace.MAX_RATE)
    seconds = _seconds(values.get("SECONDS"), trace.MAX_SECONDS)
    for name, value, bound in (
        ("BODIES", bodies, trace.MAX_BODIES),
        ("RATE", rate, trace.MAX_RATE),
        ("SECONDS", seconds, trace.MAX_SECONDS),
    ):
        if isinstance(value, ParseError):
            return ParseError(f"{what} {name} takes a number from 1 to {bound:g}.\n")
    assert not isinstance(bodies, ParseError) and not isinstance(rate, ParseError)
    assert not isinstance(seconds, ParseError)
    return on, TraceOptions(path, bodies or 0, rate, seconds)


def _bounded(word: str | None, bound: int) -> int | ParseError | None:
    if word is None:
        return None
    value = integer(word)
    return value if value is not None and 1 <= value <= bound else ParseError("")


_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")


def _seconds(word: str | None, bound: float) -> float | ParseError | None:
    if word is None:
        return None
    if not _SECONDS.fullmatch(word) or not 0 < float(word) <= bound:
        return ParseError("")
    return float(word)


def _capture(session_id: int, args: Sequence[str]) -> Command | ParseError:
    """``file [SECONDS s]`` after ``SESSION CAPTURE id``."""
    if not args:
        return ParseError("SESSION CAPTURE needs a file (an absolute path).\n")
    path = args[0]
    if not path.startswith("/"):
        return ParseError("SESSION CAPTURE needs an absolute path.\n")
    seconds: float | ParseError | None = None
    rest = args[1:]
    if rest:
        if upper(rest[0]) != "SECONDS" or len(rest) != 2:
            return ParseError("SESSION CAPTURE takes only SECONDS s after the file.\n")
        seconds = _seconds(rest[1], capture.MAX_SECONDS)
    if isinstance(seconds, ParseError):
        return ParseError(
            f"SESSION CAPTURE SECONDS takes a number from 1 to {capture.MAX_SECONDS:g}.\n"
        )
    return SessionCapture(session_id, path, seconds)


_VHOST_SUBCOMMANDS: Mapping[str, Callable[[str], Command]] = {
    "PAUSE": VhostPause,
    "UNPAUSE": VhostUnpause,
    "PRINT": lambda vhost: VhostPrint(),
    "BACKEND_DISCONNECT": VhostBackendDisconnect,
    "FORCE_DISCONNECT": VhostForceDisconnect,
}

#: VHOST's subcommands, as errors list them.
VHOST_SUBCOMMANDS = [*_VHOST_SUBCOMMANDS, "TRACE"]


def _vhost(args: Sequence[str]) -> Command | ParseError:
    subcommand = upper(args[0]) if args else ""
    vhost = args[1] if len(args) > 1 else ""
    if not subcommand:
        # sic: amqpprox's text, kept first for scripts; then what was missing.
        return ParseError(with_choices(_SESSION_NOT_FOUND, VHOST_SUBCOMMANDS))
    if subcommand == "TRACE":
        if not vhost:
            return ParseError("Session not found. VHOST TRACE needs a vhost.\n")
        tail = _trace_tail("VHOST TRACE", args[2:])
        return tail if isinstance(tail, ParseError) else VhostTrace(vhost, *tail)
    make = _VHOST_SUBCOMMANDS.get(subcommand)
    if make is not None and not vhost and subcommand != "PRINT":
        return ParseError(f"Session not found. VHOST {subcommand} needs a vhost.\n")
    if make is None:
        return ParseError(
            with_choices("Subcommand not recognised.", VHOST_SUBCOMMANDS, word=args[0])
        )
    return make(vhost)


def _conn(args: Sequence[str]) -> Command | ParseError:
    """``CONN`` or ``CONN SORT field`` (ours; the field in any case)."""
    if not args:
        return Conn()
    if upper(args[0]) != "SORT":
        return ParseError(with_choices("Subcommand not recognised.", ["SORT"], word=args[0]))
    if len(args) < 2:
        return ParseError(with_choices("CONN SORT needs a field.", CONN_SORT_FIELDS, what="fields"))
    fields = {field.lower(): field for field in CONN_SORT_FIELDS}
    field = fields.get(args[1].lower())
    if field is None:
        return ParseError(
            with_choices("Unknown CONN SORT field.", CONN_SORT_FIELDS, word=args[1], what="fields")
        )
    return Conn(field)


CONN: Parser = _conn
SESSION: Parser = _session
VHOST: Parser = _vhost
