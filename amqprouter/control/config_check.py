"""Checking a file of control commands without applying it: ``amqprouter --check`` and
``CONFIG CHECK [file]``, HAProxy's ``-c`` for this router.

A check reads the whole file and reports every problem, each with where it is
(``router.conf:12: FARM ADD f round-robin x: Backend 'x' not found``), not only the
first: an operator fixes them all in one go. It finds what a start or a reload would
refuse:

* what the control grammar refuses (the parser's own reply), and what a reload refuses
  (an action such as ``EXIT``, a backend added twice: ``config_diff.fold_problems``);
* what the routing table refuses, by applying the lines, in order, to an empty table of
  its own (``routing_commands.apply`` is pure): a farm naming an unknown backend or
  selector, a partition policy that does not exist, a host that does not resolve;
* what only bites later, when a client connects: a MAP naming a backend or farm, or a
  MAP DEFAULT naming a farm, that the file (as a whole) never adds. The router itself
  accepts such a map (amqpprox does), but in a file it is a typo;
* BACKEND CHECK of an unknown backend, FARM ON_DOWN of an unknown farm, LOG FILE where
  no log files are written;
* TLS files that cannot be read or used, by running the TLS commands against a fresh
  TLS state (certificate and key checked together, as the router does);
* a LISTEN port that cannot be bound (in use, or below 1024 without the right), by
  binding it for a moment; ``listening`` are the ports this very router already holds,
  which CONFIG CHECK leaves out (a reload keeps them).

Nothing is changed: no listener is kept, no routing table or TLS context is replaced.
The check blocks (it resolves host names and binds ports): the router runs it in a
worker thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Final

import attrs

from amqprouter.control import commands as c
from amqprouter.control import config_diff, routing_commands, tls_commands
from amqprouter.control.config_file import ConfigFileError, read_lines
from amqprouter.control.grammar import ParseError, parse
from amqprouter.net.tls_context import TlsState, missing
from amqprouter.routing import RoutingTable
from amqprouter.server.listener import bind_listener
from amqprouter.text import escape

#: LOG FILE on a router without --log-directory: refused, as it would change nothing.
NO_LOG_FILES: Final = (
    "LOG FILE has no effect: this router writes no log files (start it with "
    "--log-directory); LOG CONSOLE sets the level of what it logs.\n"
)

#: Resolves a BACKEND ADD host: None, or why it cannot be (the router's words).
Resolve = Callable[[str, int], str | None]

#: Where a BACKEND ADD that failed to resolve is put, so that the lines after it
#: (a FARM naming it) are checked as if it had resolved: one mistake, one error.
_UNRESOLVED_IP: Final = "0.0.0.0"


def resolve_host(host: str, port: int) -> str | None:
    """The router's own check of a BACKEND ADD host (``getaddrinfo``), as a reason."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"Failed to resolve '{host}', error code: {exc.strerror or exc}"
    return None


def _bind(port: int) -> str | None:
    """Whether ``port`` can be listened on now, as the router would: None, or why not."""
    try:
        bind_listener(port).close()
    except OSError as exc:
        return f"Cannot listen on port {port}: {exc.strerror or exc}"
    return None


@attrs.frozen
class Problem:
    """One problem: where it is (``<file>:<line>``, or the flag that made the line), the
    line as written (escaped: never a raw control character), and why."""

    where: str
    line: str
    reason: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.where, self.line, self.reason) if part)


@attrs.define
class _Checker:
    listening: Collection[int]
    log_files: bool
    resolve: Resolve
    bind: Callable[[int], str | None]
    table: RoutingTable = attrs.field(factory=RoutingTable)
    tls: TlsState = attrs.field(factory=TlsState)
    listened: set[int] = attrs.field(factory=set)
    # vhost (None: the default farm) → where, line, what it names
    maps: dict[str | None, tuple[str, str, c.Command]] = attrs.field(factory=dict)
    problems: list[Problem] = attrs.field(factory=list)

    def add(self, where: str, line: str, reason: str) -> None:
        # One problem, one line: a reply of several lines is joined.
        self.problems.append(Problem(where, escape(line), "; ".join(reason.strip().splitlines())))

    def run(self, where: str, line: str, command: c.Command) -> None:
        """Apply ``command`` to the checker's own state; record why it fails, if it does."""
        if isinstance(command, routing_commands.ROUTING_COMMANDS):
            self._routing(where, line, command)
        elif isinstance(command, c.BackendCheckOn | c.BackendCheckOff):
            if command.name not in self.table.backends:
                self.add(where, line, f"Backend '{command.name}' not found")
        elif isinstance(command, c.FarmOnDown):
            if command.name not in self.table.farms:
                self.add(where, line, f"Farm '{command.name}' not found")
        elif isinstance(command, tls_commands.TLS_COMMANDS):
            reply = tls_commands.execute(self.tls, command)
            if not reply.ok:
                self.add(where, line, reply.text)
        elif isinstance(command, c.ListenStart | c.ListenStartSecure):
            self._listen(where, line, command)
        elif isinstance(command, c.ListenStop):
            if command.port is None:
                self.listened.clear()
            else:
                self.listened.discard(command.port)
        elif isinstance(command, c.LogFile) and not self.log_files:
            self.add(where, line, NO_LOG_FILES)

    def _routing(self, where: str, line: str, command: c.Command) -> None:
        resolved: str | None = None
        if isinstance(command, c.BackendAdd) and not command.dns:
            error = self.resolve(command.host, command.port)
            if error is not None:
                self.add(where, line, error)
            resolved = _UNRESOLVED_IP if error is not None else command.host
        table, text = routing_commands.apply(self.table, command, resolved_ip=resolved)
        if text and isinstance(command, c.MutatingCommand):
            self.add(where, line, text)
            return
        self.table = table
        match command:
            case c.MapBackend(vhost=vhost) | c.MapFarm(vhost=vhost):
                self.maps[vhost] = (where, line, command)
            case c.MapUnmap(vhost=vhost):
                self.maps.pop(vhost, None)
            case c.MapDefault():
                self.maps[None] = (where, line, command)
            case c.MapRemoveDefault():
                self.maps.pop(None, None)

    def _listen(self, where: str, line: str, command: c.ListenStart | c.ListenStartSecure) -> None:
        port = command.port
        if isinstance(command, c.ListenStartSecure):
            lacking = missing(self.tls.settings("INGRESS"))
            if lacking:
                self.add(
                    where,
                    line,
                    f"Cannot listen on port {port}: TLS INGRESS needs {' and '.join(lacking)} "
                    "first",
                )
                return
        if port in self.listened or port in self.listening:
            self.listened.add(port)
            return
        error = self.bind(port)
        if error is not None:
            self.add(where, line, error)
            return
        self.listened.add(port)

    def check_maps(self) -> None:
        """Maps naming what the file, as a whole, never adds (checked at the end: a MAP
        may come before the BACKEND ADD it names)."""
        for where, line, command in self.maps.values():
            match command:
                case c.MapBackend(vhost=vhost, backend=name) if name not in self.table.backends:
                    self.add(
                        where,
                        line,
                        f"Backend '{name}' not found: clients of vhost '{escape(vhost)}' would "
                        "be refused",
                    )
                case c.MapFarm(vhost=vhost, farm=name) if name not in self.table.farms:
                    self.add(
                        where,
                        line,
                        f"Farm '{name}' not found: clients of vhost '{escape(vhost)}' would be "
                        "refused",
                    )
                case c.MapDefault(farm=name) if name not in self.table.farms:
                    self.add(
                        where,
                        line,
                        f"Farm '{name}' not found: clients of unmapped vhosts would be refused",
                    )


def check_lines(
    lines: Sequence[tuple[str, str]],
    *,
    listening: Collection[int] = (),
    log_files: bool = True,
    resolve: Resolve = resolve_host,
    bind: Callable[[int], str | None] = _bind,
) -> list[Problem]:
    """Every problem of ``lines`` (each ``(where, line)``, in the order they apply), in
    line order; none: the lines would all apply.

    ``listening``: ports this router already listens on (not bound again).
    ``log_files``: whether the router writes log files (else LOG FILE is refused).
    """
    checker = _Checker(listening, log_files, resolve, bind)
    parsed: list[tuple[str, str, c.Command]] = []
    for where, line in lines:
        command = parse(line)
        if isinstance(command, ParseError):
            checker.add(where, line, command.reply)
            continue
        parsed.append((where, line, command))
    # What a reload refuses; such a line is not run too (one mistake, one problem).
    refused = set()
    indexed = [(str(index), command) for index, (_where, _line, command) in enumerate(parsed)]
    for problem in config_diff.fold_problems(indexed):
        where, line, _command = parsed[int(problem.where)]
        checker.add(where, line, problem.reason)
        refused.add(int(problem.where))
    for index, (where, line, command) in enumerate(parsed):
        if index not in refused:
            checker.run(where, line, command)
    checker.check_maps()
    # In line order (sorted is stable: a line's own problems keep the order found).
    order: dict[str, int] = {}
    for index, (where, _line) in enumerate(lines):
        order.setdefault(where, index)
    return sorted(checker.problems, key=lambda problem: order.get(problem.where, len(order)))


def check_file(
    path: Path,
    *,
    listening: Collection[int] = (),
    log_files: bool = True,
    resolve: Resolve = resolve_host,
) -> list[Problem]:
    """Every problem of the ``--config`` file ``path`` (``check_lines``); one when it
    cannot be read at all."""
    try:
        lines = read_lines(path)
    except ConfigFileError as exc:
        return [Problem("", "", str(exc))]  # it names the file, and the line if any
    return check_lines(lines, listening=listening, log_files=log_files, resolve=resolve)


def verdict(problems: Sequence[Problem], checked: str) -> str:
    """The reply of a check: every problem, one a line, or that ``checked`` is valid."""
    if not problems:
        return f"Configuration valid: {checked}\n"
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return "".join(f"{problem}\n" for problem in problems) + f"Configuration invalid: {count}\n"
