"""BACKEND CHECK and FARM ON_DOWN, translated into calls on the server's health monitor.

The monitor (``server.health``) knows nothing of commands or reply texts; this module
checks names against the routing table, words the errors, and writes the settings
back as commands for CONFIG PRINT.
"""

from __future__ import annotations

from typing import Final

from amqprouter.control import commands as c
from amqprouter.routing import RoutingTable
from amqprouter.server.health import CheckSettings, HealthMonitor

#: The commands ``execute`` answers.
HEALTH_COMMANDS: Final = (c.BackendCheckOn, c.BackendCheckOff, c.FarmOnDown)


def execute(monitor: HealthMonitor, table: RoutingTable, command: c.Command) -> str:
    """Execute one of ``HEALTH_COMMANDS``: the reply ("" for a successful change)."""
    match command:
        case c.BackendCheckOn(name, interval_ms, fall, rise, timeout_ms):
            if name not in table.backends:
                return f"Backend '{name}' not found\n"
            monitor.check_on(CheckSettings(name, interval_ms, fall, rise, timeout_ms))
            return ""
        case c.BackendCheckOff(name=name):
            if name not in table.backends:
                return f"Backend '{name}' not found\n"
            monitor.check_off(name)
            return ""
        case c.FarmOnDown(name=name, disconnect=disconnect):
            if name not in table.farms:
                return f"Farm '{name}' not found\n"
            monitor.set_on_down(name, disconnect)
            return ""
    raise TypeError(f"not a health command: {command!r}")


def config_commands(monitor: HealthMonitor) -> list[c.Command]:
    """The commands that rebuild the health settings (after the routing commands)."""
    result: list[c.Command] = [
        c.BackendCheckOn(check.name, check.interval_ms, check.fall, check.rise, check.timeout_ms)
        for check in (monitor.checks[name] for name in sorted(monitor.checks))
    ]
    result += [c.FarmOnDown(name, True) for name in sorted(monitor.disconnect_farms)]
    return result
