"""SESSION and VHOST: pausing and disconnecting sessions, one or a vhost's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from amqprouter.control.commands import (
    CONN_SORT_FIELDS,
    Command,
    Conn,
    SessionControl,
    VhostBackendDisconnect,
    VhostForceDisconnect,
    VhostPause,
    VhostPrint,
    VhostUnpause,
)
from amqprouter.control.grammar.words import (
    ParseError,
    Parser,
    integer,
    upper,
    with_choices,
)

_SESSION_NOT_FOUND = "Session not found.\n"


def _session(args: Sequence[str]) -> Command | ParseError:
    # amqpprox reads the id with ``>> uint64``: a missing or non-numeric id is id 0,
    # which no session has. Whether the subcommand exists is decided after the
    # session is found, as in amqpprox.
    session_id = integer(args[0]) if args else None
    if session_id is None or session_id < 0:
        return ParseError(_SESSION_NOT_FOUND)
    return SessionControl(session_id, upper(args[1]) if len(args) > 1 else "")


_VHOST_SUBCOMMANDS: Mapping[str, Callable[[str], Command]] = {
    "PAUSE": VhostPause,
    "UNPAUSE": VhostUnpause,
    "PRINT": lambda vhost: VhostPrint(),
    "BACKEND_DISCONNECT": VhostBackendDisconnect,
    "FORCE_DISCONNECT": VhostForceDisconnect,
}


def _vhost(args: Sequence[str]) -> Command | ParseError:
    subcommand = upper(args[0]) if args else ""
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
