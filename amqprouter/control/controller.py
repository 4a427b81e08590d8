"""Executing control commands against a running server.

Routing commands are pure (``control.routing_commands.apply`` builds the next
snapshot and the reply); this module adds what needs the live process: resolving a
BACKEND ADD host, listeners, log levels, the session list, EXIT (immediate or
draining), and it hands on to the owners of the rest: BACKEND CHECK and FARM ON_DOWN
to ``control.health_commands`` (which drives the server's health monitor), SESSION
and VHOST to ``control.session_control``, STAT to the statistics service.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import structlog
import trio

from amqprouter.control import (
    auth_commands,
    completion,
    conn,
    health_commands,
    json_replies,
    limit_commands,
    routing_commands,
    session_control,
    tls_commands,
    trace_commands,
)
from amqprouter.control import commands as c
from amqprouter.control.config_check import NO_LOG_FILES, verdict
from amqprouter.control.grammar import ParseError, help_text, parse, to_line
from amqprouter.control.reload import Reloader
from amqprouter.control.socket_server import Reply
from amqprouter.net import sockets
from amqprouter.net.tls_context import TlsState
from amqprouter.observe import logging as router_logging
from amqprouter.observe.render import Output
from amqprouter.observe.service import StatsService
from amqprouter.server import Server
from amqprouter.server.admission import ListenOptions
from amqprouter.server.server import PLAIN_LISTENER, TlsNotConfigured
from amqprouter.session import Session
from amqprouter.text import escape

log = structlog.get_logger("amqprouter.control")

#: BACKEND ADD resolves its host once, at command time. The resolver gives up on a dead
#: DNS server sooner (net.resolver.DNS_TIMEOUT); this bounds everything else.
RESOLVE_TIMEOUT: Final = 5.0


class Controller:
    """Turns command lines into replies, one at a time (commands never interleave)."""

    def __init__(
        self,
        server: Server,
        *,
        request_exit: Callable[[], None],
        stats: StatsService | None = None,
        request_drain: Callable[[float | None], None] | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self.server = server
        #: CONFIG RELOAD and SIGHUP (without one: no --config file).
        self.reloader = reloader if reloader is not None else Reloader()
        #: STAT's statistics loop; None where none runs (STAT then answers an error).
        self.stats = stats
        self._request_exit = request_exit
        # EXIT GRACEFUL [seconds]: drain for that long (None: the default), then exit.
        self._request_drain = request_drain
        self._lock = trio.Lock()
        self.console_verbosity = router_logging.DEFAULT_CONSOLE_VERBOSITY
        self.file_verbosity = router_logging.DEFAULT_FILE_VERBOSITY

    @property
    def tls(self) -> TlsState:
        """The server's TLS settings and contexts (the TLS verb changes them)."""
        return self.server.tls

    async def handle(self, line: str, *, as_json: bool = False) -> Reply:
        """The reply to ``line``; with ``as_json``, its JSON form (``json_replies``)."""
        command = parse(line)
        if isinstance(command, ParseError):
            return Reply(command.reply, ok=False)
        if as_json:
            if not json_replies.has_json_form(command):
                return Reply(json_replies.refusal(command), ok=False)
            if isinstance(command, trace_commands.TRACE_COMMANDS):  # JSON lines of their own
                async with self._lock:
                    return trace_commands.execute(self.server, command, as_json=True)
            if not isinstance(command, c.StatListen):  # STAT LISTEN json is its own JSON
                async with self._lock:
                    return Reply(self._json(command))
        if isinstance(command, c.Help):
            # An empty line is answered with HELP too, but it is still a mistake.
            verb = line.strip().split(" ", 1)[0].upper()
            return Reply(help_text(), ok=verb == "HELP")
        # One command at a time: each reads the current snapshot and replaces it whole.
        async with self._lock:
            return await self._execute(command)

    def exclusive(self) -> trio.Lock:
        """The lock every command holds: whoever applies a whole configuration at once
        (``amqprouter.fleet.config_store``) holds it too, between commands."""
        return self._lock

    async def reload(self, source: str) -> Reply:
        """A reload (SIGHUP; CONFIG RELOAD comes through ``handle``), between commands."""
        async with self._lock:
            try:
                return await self.reloader.reload(self, source)
            except Exception as exc:
                # Run in the server's nursery (SIGHUP): a bug here must not end the router.
                log.exception("config reload failed", source=source)
                return Reply(f"Config reload failed: {exc!r}\n", ok=False)

    async def run_command(self, command: c.Command) -> Reply:
        """One command of a reload (the lock is held already)."""
        return await self._execute(command)

    async def stage_routing(self, commands: Sequence[c.Command]) -> tuple[c.Command, str] | None:
        """A reload's routing commands, applied to one copy of the table that replaces
        the live one at once: a session sees the old routing or the new one. On the first
        failure nothing changes, and the answer is that command and its reply."""
        table = self.server.routing
        deleted = []
        for command in commands:
            resolved_ip: str | None = None
            if isinstance(command, c.BackendAdd) and not command.dns:
                endpoint, error = await self._resolve_first(command.host, command.port)
                if endpoint is None:
                    return command, error
                resolved_ip = endpoint[1][0]
            table, text = routing_commands.apply(table, command, resolved_ip=resolved_ip)
            if text:
                return command, text.rstrip()
            if isinstance(command, c.BackendDelete):
                deleted.append(command.name)
        self.server.routing = table
        # A replaced backend is a new address: what was known of the old one's health
        # (down since a failed connect) no longer applies.
        for name in deleted:
            self.server.health.registry.forget(name)
        self.server.health.routing_changed(table)
        return None

    async def _execute(self, command: c.Command) -> Reply:
        handler = _HANDLERS.get(type(command))
        if handler is None:  # pragma: no cover - every command but HELP has one
            raise AssertionError(f"unhandled command {command!r}")
        return await handler(self, command)

    # -- the handlers (``_HANDLERS`` below maps each command type to its own) --------------

    async def _backend_print(self, command: c.BackendPrint) -> Reply:
        registry = self.server.health.registry
        # A down reason may quote what a broker sent: escaped, one line each.
        return Reply(
            routing_commands.backend_print(
                self.server.routing, lambda name: escape(registry.describe(name))
            )
        )

    async def _health(self, command: c.Command) -> Reply:
        """BACKEND CHECK, FARM ON_DOWN."""
        text = health_commands.execute(self.server.health, self.server.routing, command)
        return Reply(text, ok=not text)

    async def _tls(self, command: c.TlsCommand) -> Reply:
        reply = tls_commands.execute(self.server.tls, command)
        if reply.ok:  # primed TLS connections were made with the old settings
            self.server.primed.clear()
        return reply

    async def _auth(self, command: c.AuthService | c.AuthAlwaysAllow | c.AuthPrint) -> Reply:
        return auth_commands.execute(self.server, command)

    async def _limit(self, command: c.Command) -> Reply:
        return Reply(limit_commands.execute(self.server, command))

    async def _listen_start(self, command: c.ListenStart | c.ListenStartSecure) -> Reply:
        options = ListenOptions(command.proxy_from, command.allow)
        secure = isinstance(command, c.ListenStartSecure)
        return await self._listen(command.port, options, secure=secure)

    async def _listen_stop(self, command: c.ListenStop) -> Reply:
        self.server.stop_listening(command.port)
        return Reply("")

    async def _log_console(self, command: c.LogConsole) -> Reply:
        self.console_verbosity = command.level
        router_logging.set_console_verbosity(command.level)
        return Reply("")

    async def _log_file(self, command: c.LogFile) -> Reply:
        if not router_logging.has_files():
            return Reply(NO_LOG_FILES, ok=False)
        self.file_verbosity = command.level
        router_logging.set_file_verbosity(command.level)
        return Reply("")

    async def _conn(self, command: c.Conn) -> Reply:
        return Reply("".join(conn.conn_line(r) + "\n" for r in self._conn_records(command)))

    def _conn_records(self, command: c.Conn) -> list[conn.ConnRecord]:
        """CONN's records, in the order asked (``CONN SORT``), with the sessions' rates."""
        rates = None if self.stats is None else self.stats.collector.session_rates
        name = self.server.host_name
        records = (conn.conn_record(s, name, rates) for s in self.server.sessions.values())
        return conn.sorted_records(records, command.sort)

    async def _config_print(self, command: c.ConfigPrint) -> Reply:
        return Reply(self.config_text())

    async def _config_reload(self, command: c.ConfigReload) -> Reply:
        return await self.reloader.reload(self, "CONFIG RELOAD")

    async def _complete(self, command: c.Complete) -> Reply:
        server = self.server
        names = completion.Names(
            backends=server.routing.backends,
            farms=server.routing.farms,
            vhosts={*server.routing.mappings, *server.vhosts.seen, *server.vhosts.paused},
        )
        return Reply("".join(word + "\n" for word in completion.candidates(command.words, names)))

    async def _config_check(self, command: c.ConfigCheck) -> Reply:
        path = Path(command.path) if command.path is not None else None
        listening = frozenset(self.server.listeners)
        # It resolves host names and binds ports for a moment: off the event loop.
        problems = await trio.to_thread.run_sync(self.reloader.check, path, listening)
        if isinstance(problems, str):
            return Reply(problems + "\n")
        checked = str(path if path is not None else self.reloader.path)
        return Reply(verdict(problems, checked), ok=not problems)

    async def _exit(self, command: c.Exit) -> Reply:
        if command.graceful and self._request_drain is not None:
            drain, seconds = self._request_drain, command.seconds
            return Reply("Exiting.\n", after=lambda: drain(seconds))
        return Reply("Exiting.\n", after=self._request_exit)

    async def _session(self, command: c.SessionControl) -> Reply:
        return session_control.execute_session(self.server, command)

    async def _vhost(
        self,
        command: c.VhostPause
        | c.VhostUnpause
        | c.VhostPrint
        | c.VhostBackendDisconnect
        | c.VhostForceDisconnect,
    ) -> Reply:
        return session_control.execute_vhost(self.server, command)

    async def _trace(self, command: c.SessionTrace | c.SessionCapture | c.VhostTrace) -> Reply:
        return trace_commands.execute(self.server, command)

    async def _map_hostnames(self, command: c.MapHostnameDns) -> Reply:
        self.server.map_hostnames()
        return Reply("Hostname mapper set for all current sessions.\n")

    def _json(self, command: c.Command) -> str:
        """The JSON form of one of ``json_replies.JSON_COMMANDS`` (STAT LISTEN aside)."""
        server = self.server
        match command:
            case c.Conn():
                return json_replies.json_lines(map(conn.conn_json, self._conn_records(command)))
            case c.BackendPrint():
                return json_replies.backends(server.routing, server.health.registry.get)
            case c.FarmPrint():
                return json_replies.farms(server.routing)
            case c.MapPrint():
                return json_replies.mappings(server.routing)
            case c.RulePrint():
                return json_replies.rules(server.routing)
            case c.VhostPrint():
                return json_replies.vhosts(server.vhosts.paused, server.vhosts.seen)
            case c.LimitPrint(vhost=vhost):
                return json_replies.limits(server.limits, vhost)
        raise AssertionError(f"no JSON form for {command!r}")  # pragma: no cover

    async def _stat(
        self, command: c.StatListen | c.StatSend | c.StatStopSend | c.StatPerSource
    ) -> Reply:
        if self.stats is None:
            return Reply("Statistics are not collected in this router.\n", ok=False)
        if isinstance(command, c.StatListen):
            output: Output = "json" if command.output == "json" else "human"
            return Reply("", stream=self.stats.listen(output, command.filter, command.value))
        if isinstance(command, c.StatSend):
            endpoint, error = await self._resolve_first(command.host, command.port)
            if endpoint is None:
                return Reply(error + "\n", ok=False)
            self.stats.send_to(*endpoint, (command.host, command.port))
            return Reply(f"Sending stats on {sockets.endpoint((command.host, command.port))}\n")
        if isinstance(command, c.StatStopSend):
            self.stats.stop_sending()
            return Reply("Stopped sending stats.\n")
        self.stats.collector.per_source = command.enabled
        return Reply(f"{'ENABLE' if command.enabled else 'DISABLE'} per-source applied.\n")

    async def _resolve_first(
        self, host: str, port: int
    ) -> tuple[tuple[socket.AddressFamily, tuple[str, int]] | None, str]:
        """``host``'s first address (any family), or None and why (BACKEND ADD's words,
        without amqpprox's missing newline added: callers decide)."""
        with trio.move_on_after(RESOLVE_TIMEOUT):
            try:
                addresses = await self.server.resolver.resolve(host, port)
            except OSError as exc:
                return None, f"Failed to resolve '{host}', error code: {exc.strerror or exc}"
            family, address = addresses[0]
            return (family, (address[0], address[1])), ""
        return None, f"Failed to resolve '{host}', error code: timed out"

    async def _routing(self, command: c.Command) -> Reply:
        resolved_ip: str | None = None
        if isinstance(command, c.BackendAdd) and not command.dns:
            endpoint, error = await self._resolve_first(command.host, command.port)
            if endpoint is None:
                return Reply(error + "\n", ok=False)
            resolved_ip = endpoint[1][0]
        table, text = routing_commands.apply(self.server.routing, command, resolved_ip=resolved_ip)
        self.server.routing = table
        self.server.health.routing_changed(table)
        # Mutations answer nothing on success; any text they return is an error.
        ok = not text or not isinstance(command, c.MutatingCommand)
        return Reply(text, ok=ok)

    async def _drain_backend(self, command: c.BackendDrain) -> Reply:
        """BACKEND DRAIN: disable (configuration), then disconnect its sessions."""
        name, graceful = command.name, command.graceful
        table, text = routing_commands.apply(self.server.routing, c.BackendDisable(name))
        if text:
            return Reply(text, ok=False)
        self.server.routing = table
        reason = session_control.drain_reason(name, graceful)
        count = self.server.disconnect_backend(name, graceful=graceful, reason=reason)
        log.info("backend drained", backend=name, graceful=graceful, sessions=count)
        return Reply(session_control.drain_reply(name, graceful, count))

    async def _listen(self, port: int, options: ListenOptions, *, secure: bool = False) -> Reply:
        if port in self.server.listeners and secure != (port in self.server.secure_listeners):
            kind = "a plain" if secure else "a TLS"
            return Reply(f"Cannot listen on port {port}: it is {kind} listener\n", ok=False)
        current = self.server.listen_options.get(port)
        if current is not None and current != options:
            # Silently keeping the old options would leave the operator believing the
            # new ones are in force.
            line = to_line(_listen_command(port, current, secure=secure))
            return Reply(
                f"Cannot listen on port {port}: it is already listening as '{line}'; "
                "LISTEN STOP it first\n",
                ok=False,
            )
        try:
            if secure:
                await self.server.listen_secure(port, options=options)
            else:
                await self.server.listen(port, options=options)
        except TlsNotConfigured as exc:
            return Reply(f"Cannot listen on port {port}: {exc}\n", ok=False)
        except OSError as exc:
            return Reply(f"Cannot listen on port {port}: {exc.strerror or exc}\n", ok=False)
        return Reply("")

    def config_text(self) -> str:
        """The current configuration as the commands that rebuild it (CONFIG PRINT)."""
        lines = [f"LOG CONSOLE {self.console_verbosity}"]
        if router_logging.has_files():
            lines.append(f"LOG FILE {self.file_verbosity}")
        routing = routing_commands.config_commands(self.server.routing)
        lines += [to_line(command) for command in routing]
        lines += [
            to_line(command) for command in health_commands.config_commands(self.server.health)
        ]
        lines += [
            to_line(command) for command in limit_commands.config_commands(self.server.limits)
        ]
        if self.stats is not None:
            # STAT SEND's host as typed, not resolved.
            lines += [to_line(c.StatSend(*p.target)) for p in self.stats.publishers]
            if not self.stats.collector.per_source:
                lines.append(to_line(c.StatPerSource(enabled=False)))
        lines += [to_line(command) for command in auth_commands.config_commands(self.server.auth)]
        # TLS before the listeners: LISTEN START_SECURE needs the INGRESS context.
        lines += [to_line(command) for command in tls_commands.config_commands(self.server.tls)]
        lines += [
            to_line(
                _listen_command(
                    port,
                    self.server.listen_options.get(port, PLAIN_LISTENER),
                    secure=port in self.server.secure_listeners,
                )
            )
            for port in sorted(self.server.listeners)
        ]
        return "".join(line + "\n" for line in lines)


#: A command type → the Controller method that runs it (HELP is answered by ``handle``).
_HANDLERS: dict[type, Callable[[Controller, Any], Awaitable[Reply]]] = {}


def _handle(handler: Callable[[Controller, Any], Awaitable[Reply]], *kinds: type) -> None:
    """``handler`` runs each of ``kinds``: it is only ever given those (the table is by
    exact type), and each handler's annotation names them (tests/control checks it)."""
    for kind in kinds:
        assert kind not in _HANDLERS, f"{kind.__name__} has two handlers"
        _HANDLERS[kind] = handler


_handle(Controller._backend_print, c.BackendPrint)
_handle(Controller._health, *health_commands.HEALTH_COMMANDS)
_handle(Controller._routing, *routing_commands.ROUTING_COMMANDS)
_handle(Controller._tls, *tls_commands.TLS_COMMANDS)
_handle(Controller._auth, *auth_commands.AUTH_COMMANDS)
_handle(Controller._limit, *limit_commands.LIMIT_COMMANDS)
_handle(Controller._listen_start, c.ListenStart, c.ListenStartSecure)
_handle(Controller._listen_stop, c.ListenStop)
_handle(Controller._log_console, c.LogConsole)
_handle(Controller._log_file, c.LogFile)
_handle(Controller._conn, c.Conn)
_handle(Controller._config_print, c.ConfigPrint)
_handle(Controller._config_reload, c.ConfigReload)
_handle(Controller._config_check, c.ConfigCheck)
_handle(Controller._complete, c.Complete)
_handle(Controller._exit, c.Exit)
_handle(Controller._session, c.SessionControl)
_handle(Controller._vhost, *session_control.VHOST_COMMANDS)
_handle(Controller._trace, *trace_commands.TRACE_COMMANDS)
_handle(Controller._drain_backend, c.BackendDrain)
_handle(Controller._map_hostnames, c.MapHostnameDns)
_handle(Controller._stat, c.StatListen, c.StatSend, c.StatStopSend, c.StatPerSource)


def _listen_command(
    port: int, options: ListenOptions, *, secure: bool
) -> c.ListenStart | c.ListenStartSecure:
    kind = c.ListenStartSecure if secure else c.ListenStart
    return kind(port, options.proxy_from, options.allow)


def conn_line(session: Session, name: Callable[[str], str] = str) -> str:
    """One CONN line for ``session`` (``conn.conn_line`` of its record)."""
    return conn.conn_line(conn.conn_record(session, name))
