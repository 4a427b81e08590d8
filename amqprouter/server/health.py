"""Active health checks and the farm policy on a member going down.

``HealthMonitor`` turns checks on and off (``check_on``/``check_off``) and keeps the
farms whose sessions leave when a member goes down (``set_on_down``); the control
plane translates BACKEND CHECK and FARM ON_DOWN into these calls
(``control.health_commands``). It runs one trio task per checked backend in the
server's nursery. Each task probes its backend every interval (``probe.probe_backend`` by
default; injectable) and reports to the ``HealthRegistry``, which decides up and
down (see ``routing.health``). The task is cancelled when the check is turned off
or replaced, or the backend is deleted.

When a backend goes down (by a check or by a failed connect) and a farm it belongs
to says ``FARM ON_DOWN farm DISCONNECT``, its sessions are asked to leave gracefully
(``Server.disconnect_backend``, once per up→down transition), so that their clients
reconnect, through the router, to a healthy member.

Health settings are not part of the routing snapshot: CONFIG PRINT prints them after
the routing commands. Deleting a backend deletes its check;
deleting a farm deletes its policy; FARM ADD over an existing farm keeps it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import structlog
import trio

from amqprouter.routing import Backend, RoutingTable
from amqprouter.routing.health import HealthRegistry

log = structlog.get_logger("amqprouter.health")

#: (backend, timeout in seconds) → None if it passed, else why it failed.
Probe = Callable[[Backend, float], Awaitable[str | None]]
#: (backend name, reason) → how many sessions were asked to leave.
Disconnect = Callable[[str, str], int]


@attrs.frozen
class CheckSettings:
    """One backend's active check: every ``interval_ms``, ``fall`` failures mark it
    down, ``rise`` passes up, each probe bounded by ``timeout_ms``."""

    name: str
    interval_ms: int
    fall: int
    rise: int
    timeout_ms: int


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
        self.checks: dict[str, CheckSettings] = {}
        #: Farms whose sessions leave when a member goes down (FARM ON_DOWN DISCONNECT).
        self.disconnect_farms: set[str] = set()
        self._tasks: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Run checks in ``nursery`` from now on (the server's, while it runs)."""
        self._nursery = nursery

    # -- settings --------------------------------------------------------------------

    def check_on(self, check: CheckSettings) -> None:
        """Start (or replace) ``check.name``'s active check."""
        assert self._nursery is not None, "Server.run() must be started first"
        self._stop_task(check.name)
        self.checks[check.name] = check
        self.registry.start_checking(check.name, check.fall, check.rise)
        scope = trio.CancelScope()
        self._tasks[check.name] = scope
        self._nursery.start_soon(self._check_loop, check, scope)
        log.info(
            "health check on",
            backend=check.name,
            interval_ms=check.interval_ms,
            fall=check.fall,
            rise=check.rise,
            timeout_ms=check.timeout_ms,
        )

    def check_off(self, name: str) -> None:
        """Stop ``name``'s active check, if it has one."""
        self._stop_task(name)
        if self.checks.pop(name, None) is not None:
            self.registry.stop_checking(name)
            log.info("health check off", backend=name)

    def set_on_down(self, farm: str, disconnect: bool) -> None:
        """Whether ``farm``'s sessions on a member that goes down are asked to leave."""
        if disconnect:
            self.disconnect_farms.add(farm)
        else:
            self.disconnect_farms.discard(farm)

    def routing_changed(self, table: RoutingTable) -> None:
        """Drop the checks of deleted backends and the policies of deleted farms."""
        for name in [name for name in self.checks if name not in table.backends]:
            self.check_off(name)
            self.registry.forget(name)
        self.disconnect_farms &= set(table.farms)

    # -- active checks ---------------------------------------------------------------

    def _stop_task(self, name: str) -> None:
        scope = self._tasks.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def _check_loop(self, check: CheckSettings, scope: trio.CancelScope) -> None:
        """Probe every interval (start to start; a slow probe delays only itself)."""
        name = check.name
        interval, timeout = check.interval_ms / 1000, check.timeout_ms / 1000
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
