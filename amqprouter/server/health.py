"""Active health checks, the farm policy on a member going down, and their commands.

``HealthMonitor`` executes BACKEND CHECK, FARM ON_DOWN and (with health information
appended) BACKEND PRINT, and runs one trio task per checked backend in the server's
nursery. Each task probes its backend every interval (``probe.probe_backend`` by
default; injectable) and reports to the ``HealthRegistry``, which decides up and
down (see ``routing.health``). The task is cancelled when the check is turned off
or replaced, or the backend is deleted.

When a backend goes down (by a check or by a failed connect) and a farm it belongs
to says ``FARM ON_DOWN farm DISCONNECT``, its sessions are asked to leave gracefully
(``Server.disconnect_backend``, once per up→down transition), so that their clients
reconnect, through the router, to a healthy member.

Health settings are not part of the routing snapshot: CONFIG PRINT prints them after
the routing commands (``config_commands``). Deleting a backend deletes its check;
deleting a farm deletes its policy; FARM ADD over an existing farm keeps it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import structlog
import trio

from amqprouter.control import commands as c
from amqprouter.routing import Backend, RoutingTable
from amqprouter.routing.configure import backend_state_line
from amqprouter.routing.health import HealthRegistry
from amqprouter.text import escape

log = structlog.get_logger("amqprouter.health")

#: (backend, timeout in seconds) → None if it passed, else why it failed.
Probe = Callable[[Backend, float], Awaitable[str | None]]
#: (backend name, reason) → how many sessions were asked to leave.
Disconnect = Callable[[str, str], int]

#: The commands ``HealthMonitor.execute`` answers.
HEALTH_COMMANDS: Final = (c.BackendCheckOn, c.BackendCheckOff, c.FarmOnDown, c.BackendPrint)

#: A Close reply text is an AMQP short string (255 bytes); the reason is cut to fit.
_REASON_MAX: Final = 200


class HealthMonitor:
    """Runs the active checks and applies the farm policies of one server."""

    def __init__(
        self,
        registry: HealthRegistry,
        *,
        routing: Callable[[], RoutingTable],
        probe: Probe,
        disconnect: Disconnect,
    ) -> None:
        self.registry = registry
        registry.on_down = self._on_down
        self._routing = routing
        #: How a check probes a backend (replaceable, e.g. by tests, before a check starts).
        self.probe = probe
        self._disconnect = disconnect
        #: Checked backends, by name: the command that turned the check on.
        self.checks: dict[str, c.BackendCheckOn] = {}
        #: Farms whose sessions leave when a member goes down (FARM ON_DOWN DISCONNECT).
        self.disconnect_farms: set[str] = set()
        self._tasks: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Run checks in ``nursery`` from now on (the server's, while it runs)."""
        self._nursery = nursery

    # -- commands --------------------------------------------------------------------

    def execute(self, command: c.Command) -> str:
        """Execute one of ``HEALTH_COMMANDS``: the reply ("" for a successful change)."""
        table = self._routing()
        match command:
            case c.BackendPrint():
                # A down reason may quote what a broker sent: escaped, one line each.
                return "".join(
                    backend_state_line(table, name) + escape(self.registry.describe(name)) + "\n"
                    for name in sorted(table.backends)
                )
            case c.BackendCheckOn(name=name) | c.BackendCheckOff(name=name):
                if name not in table.backends:
                    return f"Backend '{name}' not found\n"
                if isinstance(command, c.BackendCheckOn):
                    self._check_on(command)
                else:
                    self._check_off(name)
                return ""
            case c.FarmOnDown(name=name, disconnect=disconnect):
                if name not in table.farms:
                    return f"Farm '{name}' not found\n"
                if disconnect:
                    self.disconnect_farms.add(name)
                else:
                    self.disconnect_farms.discard(name)
                return ""
        raise TypeError(f"not a health command: {command!r}")

    def routing_changed(self, table: RoutingTable) -> None:
        """Drop the checks of deleted backends and the policies of deleted farms."""
        for name in [name for name in self.checks if name not in table.backends]:
            self._check_off(name)
            self.registry.forget(name)
        self.disconnect_farms &= set(table.farms)

    def config_commands(self) -> list[c.Command]:
        """The commands that rebuild the health settings (after the routing commands)."""
        result: list[c.Command] = [self.checks[name] for name in sorted(self.checks)]
        result += [c.FarmOnDown(name, True) for name in sorted(self.disconnect_farms)]
        return result

    # -- active checks ---------------------------------------------------------------

    def _check_on(self, command: c.BackendCheckOn) -> None:
        assert self._nursery is not None, "Server.run() must be started first"
        self._stop_task(command.name)
        self.checks[command.name] = command
        self.registry.start_checking(command.name, command.fall, command.rise)
        scope = trio.CancelScope()
        self._tasks[command.name] = scope
        self._nursery.start_soon(self._check_loop, command, scope)
        log.info(
            "health check on",
            backend=command.name,
            interval_ms=command.interval_ms,
            fall=command.fall,
            rise=command.rise,
            timeout_ms=command.timeout_ms,
        )

    def _check_off(self, name: str) -> None:
        self._stop_task(name)
        if self.checks.pop(name, None) is not None:
            self.registry.stop_checking(name)
            log.info("health check off", backend=name)

    def _stop_task(self, name: str) -> None:
        scope = self._tasks.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def _check_loop(self, command: c.BackendCheckOn, scope: trio.CancelScope) -> None:
        """Probe every interval (start to start; a slow probe delays only itself)."""
        name = command.name
        interval, timeout = command.interval_ms / 1000, command.timeout_ms / 1000
        with scope:
            next_probe = trio.current_time()
            while True:
                backend = self._routing().backends.get(name)
                if backend is None:
                    return
                try:
                    reason = await self.probe(backend, timeout)
                except Exception as exc:
                    # A bug or an odd OS error in one probe must not end the server.
                    log.exception("health check probe failed", backend=name)
                    reason = f"probe error: {exc!r}"
                if reason is None:
                    self.registry.check_passed(name)
                else:
                    log.debug("health check failed", backend=name, reason=reason)
                    self.registry.check_failed(name, reason)
                next_probe = max(next_probe + interval, trio.current_time())
                await trio.sleep_until(next_probe)

    # -- farm policy -----------------------------------------------------------------

    def _on_down(self, name: str, reason: str) -> None:
        farms = sorted(
            farm.name
            for farm in self._routing().farms.values()
            if farm.name in self.disconnect_farms and name in farm.members
        )
        if not farms:
            return
        # The session words the Close itself: "CONNECTION_FORCED - <this reason>".
        text = f"backend {name} is down: {reason}"
        if len(text) > _REASON_MAX:
            text = text[: _REASON_MAX - 3] + "..."
        try:
            count = self._disconnect(name, text)
        except Exception:
            # A failing policy must not take the session or the check that noticed with it.
            log.exception("cannot disconnect the sessions of a down backend", backend=name)
            return
        log.info(
            "disconnecting the sessions of a down backend",
            backend=name,
            farms=farms,
            sessions=count,
        )
