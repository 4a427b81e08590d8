"""AUTH: the auth service clients are checked with, or none."""

from __future__ import annotations

from collections.abc import Sequence

from amqprouter.control.commands import (
    AuthAlwaysAllow,
    AuthPrint,
    AuthService,
    Command,
)
from amqprouter.control.grammar.words import (
    ParseError,
    port_number,
    subcommands,
)


def _auth_service(args: Sequence[str]) -> Command | ParseError:
    # amqpprox's checks, in its order and words.
    if not args:
        return ParseError("No hostname specified.\n")
    port = port_number(args[1]) if len(args) > 1 else None
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


AUTH = subcommands(
    {
        "SERVICE": _auth_service,
        "ALWAYS_ALLOW": lambda args: AuthAlwaysAllow(),
        "PRINT": lambda args: AuthPrint(),
    },
    missing="No subcommand provided.\n",
    unknown=lambda subcommand: "Unknown subcommand.\n",
)
