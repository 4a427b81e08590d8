"""SESSION, VHOST and BACKEND DRAIN: commands that act on live sessions.

Replies are amqpprox's (reference/amqpprox.md section 1): success answers nothing,
except VHOST PRINT and BACKEND DRAIN (ours), which says how many sessions it asked
to leave. Each disconnect carries a reason naming the command, which the client
sees in its Connection.Close (``CONNECTION_FORCED - disconnected by operator
(SESSION 7 DISCONNECT_GRACEFUL)``) and the log records.

Differences from amqpprox:

* ``VHOST UNPAUSE`` resumes the vhost's established paused sessions, with nothing
  they sent while paused lost; amqpprox force-disconnects them (PR #75).
* ``SESSION id UNPAUSE`` exists (amqpprox has no per-session unpause).
* A paused session keeps both peers alive with heartbeats, holds at most 1 MiB of
  client data, and is disconnected gracefully after ``--max-pause-seconds``.
"""

from __future__ import annotations

from amqprouter.control import commands as c
from amqprouter.control.grammar import with_choices
from amqprouter.control.socket_server import Reply
from amqprouter.server import Server
from amqprouter.session import End, Session

_DISCONNECTS = {
    "DISCONNECT_GRACEFUL": End.OPERATOR,
    "FORCE_DISCONNECT": End.OPERATOR_FORCED,
}


#: SESSION's subcommands, as HELP lists them.
ACTIONS = ("PAUSE", "UNPAUSE", "DISCONNECT_GRACEFUL", "FORCE_DISCONNECT", "TRACE", "CAPTURE")


def execute_session(server: Server, command: c.SessionControl) -> Reply:
    session = server.sessions.get(command.session_id)
    if session is None:
        return Reply("Session not found.\n", ok=False)
    action = command.action
    if action == "PAUSE":
        if session.pool_link is not None:
            return Reply(
                f"Session {session.id} is pooled: a pooled session cannot be paused.\n",
                ok=False,
            )
        session.pause()
    elif action == "UNPAUSE":
        session.unpause()
    elif action in _DISCONNECTS:
        reason = f"disconnected by operator (SESSION {session.id} {action})"
        session.disconnect(_DISCONNECTS[action], reason)
    else:
        # amqpprox's words first (scripts match them), then what would have worked.
        word = action or None
        return Reply(with_choices("Session subcommand not found.", ACTIONS, word=word), ok=False)
    return Reply("")


#: The VHOST commands ``execute_vhost`` runs (a tuple for isinstance, a union for types).
VHOST_COMMANDS = (
    c.VhostPause,
    c.VhostUnpause,
    c.VhostPrint,
    c.VhostBackendDisconnect,
    c.VhostForceDisconnect,
)
VhostCommand = (
    c.VhostPause | c.VhostUnpause | c.VhostPrint | c.VhostBackendDisconnect | c.VhostForceDisconnect
)


def execute_vhost(server: Server, command: VhostCommand) -> Reply:
    if isinstance(command, c.VhostPrint):
        return Reply(server.vhosts.print_text())
    vhost = command.vhost
    sessions: list[Session] = server.vhost_sessions(vhost)
    if isinstance(command, c.VhostPause):
        server.vhosts.paused.add(vhost)
        for session in sessions:
            session.pause()
    elif isinstance(command, c.VhostUnpause):
        server.vhosts.paused.discard(vhost)
        for session in sessions:
            session.unpause()
    elif isinstance(command, c.VhostBackendDisconnect):
        for session in sessions:
            session.disconnect(End.OPERATOR_BACKEND, f"VHOST {vhost} BACKEND_DISCONNECT")
    else:
        reason = f"disconnected by operator (VHOST {vhost} FORCE_DISCONNECT)"
        for session in sessions:
            session.disconnect(End.OPERATOR_FORCED, reason)
    return Reply("")


def drain_reply(name: str, graceful: bool, count: int) -> str:
    how = "gracefully" if graceful else "by force"
    return f"Backend '{name}' disabled; disconnecting {count} session(s) {how}.\n"


def drain_reason(name: str, graceful: bool) -> str:
    return f"disconnected by operator (BACKEND DRAIN {name} {'GRACEFUL' if graceful else 'FORCE'})"
