"""The AUTH verb: which auth service new sessions ask (server/auth.py), in amqpprox's
words (reference/amqpprox.md section 1, AUTH). Every AUTH command answers the PRINT
text. A change applies to sessions that start after it: a session takes the server's
auth service when its client connects.
"""

from __future__ import annotations

from amqprouter.control import commands as c
from amqprouter.control.socket_server import Reply
from amqprouter.server import Server
from amqprouter.server.auth import AuthService

#: The commands ``execute`` runs.
AUTH_COMMANDS = (c.AuthService, c.AuthAlwaysAllow, c.AuthPrint)

ALWAYS_ALLOW_TEXT = (
    "All connections are authorised to route to any vhost. No auth service requests will be made.\n"
)


def execute(server: Server, command: c.AuthService | c.AuthAlwaysAllow | c.AuthPrint) -> Reply:
    if isinstance(command, c.AuthService):
        server.auth = AuthService(command.host, command.port, command.target)
    elif isinstance(command, c.AuthAlwaysAllow):
        server.auth = None
    return Reply(print_text(server.auth))


def print_text(service: AuthService | None) -> str:
    if service is None:
        return ALWAYS_ALLOW_TEXT
    return f"HTTP Auth service will be used to authn/authz client connections: {service.url}\n"


def config_commands(service: AuthService | None) -> list[c.AuthService]:
    """What CONFIG PRINT writes: nothing for the default, ALWAYS_ALLOW."""
    if service is None:
        return []
    return [c.AuthService(service.host, service.port, service.target)]
