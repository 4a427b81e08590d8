"""LIMIT, translated into calls on the server's limits (server/limits.py).

The reply texts are amqpprox's, word for word (reference/amqpprox.md section 1),
but for two quirks: ``Successfully disabled default ... limit`` ends with its
newline (amqpprox adds a space after it), and the log tag is
``AMQPROUTER_CONNECTION_LIMIT`` (the product's name, as every renamed name).
CONNECTIONS is ours, with replies worded like the others.
"""

from __future__ import annotations

from typing import Final

from amqprouter.control import commands as c
from amqprouter.server.limits import CONNECTION_LIMIT_TAG, LIMIT_KINDS, LimitKind, Limits
from amqprouter.server.server import Server

#: The commands ``execute`` answers.
LIMIT_COMMANDS: Final = (c.LimitSet, c.LimitDisable, c.LimitPrint)

_ALARM_DEFAULT = (
    f"The limiter will only log at warning level with {CONNECTION_LIMIT_TAG} as a substring "
    "and the relevant limit details, when the new incoming connection violates the default "
    "limit for all vhosts.\n"
)
_ALARM_VHOST = (
    f"The limiter will only log at warning level with {CONNECTION_LIMIT_TAG} as a substring "
    "and the relevant limit details, when the new incoming connection violates the specified "
    "limit.\n"
)
# DISABLE's words for each kind (the data rates answer nothing, as in amqpprox).
_DISABLED_NAME = {
    "CONN_RATE": "connection rate limit",
    "CONN_RATE_ALARM": "alarm only connection rate limit",
    "CONNECTIONS": "concurrent connection limit",
}


def execute(server: Server, command: c.Command) -> str:
    """Execute one of ``LIMIT_COMMANDS``: the reply."""
    limits = server.limits
    match command:
        case c.LimitSet(kind, vhost, value):
            limits.set(kind, vhost, value)
            if kind.startswith("DATA_RATE"):
                server.apply_data_limits(vhost)
            return _set_reply(kind, vhost, value)
        case c.LimitDisable(kind, vhost):
            limits.disable(kind, vhost)
            if kind.startswith("DATA_RATE"):
                server.apply_data_limits(vhost)
                return ""
            what = _DISABLED_NAME[kind]
            if vhost is None:
                return f"Successfully disabled default {what}\n"
            return f"Successfully disabled specific {what} for vhost {vhost}\n"
        case c.LimitPrint(vhost=None):
            return print_defaults(limits)
        case c.LimitPrint(vhost=str(vhost)):
            return print_vhost(limits, vhost)
    raise TypeError(f"not a LIMIT command: {command!r}")


def _set_reply(kind: str, vhost: str | None, value: int) -> str:
    match kind, vhost:
        case "CONN_RATE", None:
            return f"Default connection rate limit is set to {value} connections per second.\n"
        case "CONN_RATE", str():
            return f"For vhost {vhost}, Allow average {value} number of connections per 1 seconds\n"
        case "CONN_RATE_ALARM", None:
            return (
                f"Default connection rate limit is set to {value} connections per second in "
                "alarm only mode.\n" + _ALARM_DEFAULT
            )
        case "CONN_RATE_ALARM", str():
            return (
                f"For vhost {vhost}, Allow average {value} number of connections per 1 seconds "
                "in alarm only mode.\n" + _ALARM_VHOST
            )
        case "CONNECTIONS", None:
            return f"Default concurrent connection limit is set to {value} connections.\n"
        case "CONNECTIONS", str():
            return f"For vhost {vhost}, allow at most {value} concurrent connections.\n"
    return ""  # DATA_RATE, DATA_RATE_ALARM: no output, as in amqpprox


def print_defaults(limits: Limits) -> str:
    """LIMIT PRINT: every limit in force. The DEFAULT's first, amqpprox's lines in
    amqpprox's order then ours (CONNECTIONS), or amqpprox's ``No default limit ...``
    line; then each vhost's own limits, by vhost, as ``LIMIT PRINT vhost`` words them.

    amqpprox prints the DEFAULT's alone, so ``No default limit configured for any
    vhost.`` answered an operator whose vhost limit was refusing clients: ours also
    lists the vhosts' own (after the reference's lines, which scripts may match)."""
    lines = []
    defaults = {kind: limits.settings[kind].get(None) for kind in LIMIT_KINDS}
    if (n := defaults["CONN_RATE_ALARM"]) is not None:
        lines.append(
            f"Default limit for any vhost, allow average {n} connections per second in alarm "
            "only mode.\n"
        )
    if (n := defaults["CONN_RATE"]) is not None:
        lines.append(f"Default limit for any vhost, allow average {n} connections per second.\n")
    if (n := defaults["DATA_RATE_ALARM"]) is not None:
        lines.append(
            f"Default data limit for any vhost, allow max {n} bytes per second in alarm only "
            "mode.\n"
        )
    if (n := defaults["DATA_RATE"]) is not None:
        lines.append(f"Default data limit for any vhost, allow max {n} bytes per second.\n")
    if (n := defaults["CONNECTIONS"]) is not None:
        lines.append(f"Default limit for any vhost, allow at most {n} concurrent connections.\n")
    if not lines:
        lines.append("No default limit configured for any vhost.\n")
    for vhost in limited_vhosts(limits):
        own = {kind: limits.settings[kind].get(vhost) for kind in LIMIT_KINDS}
        lines += _vhost_lines(vhost, {k: None if n is None else (n, False) for k, n in own.items()})
    return "".join(lines)


def limited_vhosts(limits: Limits) -> list[str]:
    """The vhosts with a limit of their own, sorted."""
    return sorted({v for values in limits.settings.values() for v in values if v is not None})


def print_vhost(limits: Limits, vhost: str) -> str:
    """LIMIT PRINT vhost: the limits in force for ``vhost``, its own or the DEFAULT's.

    A vhost's own connection-rate limit prints in amqpprox's ``Allow average ... per 1
    seconds`` form, a DEFAULT one in its ``allow average ... per second`` form."""
    found = {kind: limits.effective(kind, vhost) for kind in LIMIT_KINDS}
    return "".join(_vhost_lines(vhost, found)) or f"No limit configured for vhost {vhost}.\n"


def _vhost_lines(vhost: str, found: dict[LimitKind, tuple[int, bool] | None]) -> list[str]:
    """amqpprox's lines for ``vhost``: ``found`` is each kind's (value, the DEFAULT's?)."""
    lines = []
    if (alarm := found["CONN_RATE_ALARM"]) is not None:
        n, default = alarm
        lines.append(
            f"Alarm only limit, for vhost {vhost}, allow average {n} number of connections per "
            "second.\n"
            if default
            else f"Alarm only limit, for vhost {vhost}, Allow average {n} number of connections "
            "per 1 seconds.\n"
        )
    if (rate := found["CONN_RATE"]) is not None:
        n, default = rate
        lines.append(
            f"For vhost {vhost}, allow average {n} number of connections per second.\n"
            if default
            else f"For vhost {vhost}, Allow average {n} number of connections per 1 seconds.\n"
        )
    if (data_alarm := found["DATA_RATE_ALARM"]) is not None:
        lines.append(
            f"Alarm only data limit, for vhost {vhost}, allow max {data_alarm[0]} bytes per "
            "second.\n"
        )
    if (data := found["DATA_RATE"]) is not None:
        lines.append(f"For vhost {vhost}, allow max {data[0]} bytes per second.\n")
    if (concurrent := found["CONNECTIONS"]) is not None:
        lines.append(f"For vhost {vhost}, allow at most {concurrent[0]} concurrent connections.\n")
    return lines


def config_commands(limits: Limits) -> list[c.Command]:
    """The commands that rebuild the limits: each kind's DEFAULT, then its vhosts sorted."""
    result: list[c.Command] = []
    for kind in LIMIT_KINDS:
        values = limits.settings[kind]
        if None in values:
            result.append(c.LimitSet(kind, None, values[None]))
        result += [
            c.LimitSet(kind, vhost, values[vhost])
            for vhost in sorted(v for v in values if v is not None)
        ]
    return result
