"""Reloading: SIGHUP and ``CONFIG RELOAD`` re-read the ``--config`` file and apply what
changed in it, re-open the log files and re-read the TLS files.

A reload, in order:

1. Re-opens the log file under its name (logrotate renamed it and sent SIGHUP), always,
   even when the configuration file turns out bad: that is not configuration.
2. Reads the file and parses every line with the control grammar, then folds them into
   the state they configure (control/config_diff.py). A line that does not parse, or an
   action line (EXIT, VHOST PAUSE...), fails the reload before anything is applied:
   ``Config reload failed: <file>:<line>: <why>``.
3. Compares that state with the state the file had when it was last applied, and
   applies the difference as control commands through the controller: the routing
   commands against a copy of the routing table that replaces the live one at once, or
   not at all when one of them fails (``Config reload failed: <file>:<line>: <command>:
   <reply>``); then the other settings, each on its own (a listener whose port is taken
   fails alone, is reported as ``Failed: <file>:<line>: <command>: <reply>``, and is
   tried again at the next reload). The reply is one verdict: the changes made and the
   failures, or ``No changes``.
4. Builds each TLS context again from its files, so certificates replaced on disk are
   used by new sessions (a file that cannot be used keeps the old context, and is
   reported).

What the file does not name is never touched: backends, farms, maps... that an operator
added over the control socket stay. An object the file names is the file's: if its line
changes, the new line replaces whatever the operator did to it at runtime; if its line
stays, a runtime change to it stays too. The start's flags sit around the file as they
did at start: ``-v`` below it (a removed ``LOG CONSOLE`` line sets the ``-v`` level back,
a removed ``LOG FILE`` line level 3), the simple-mode and TLS flags above it (applied
after the file at start, they still win).

Without ``--config``, a reload does steps 1 and 4, and CONFIG RELOAD answers an error
saying there is no file. Each reload logs one line with its outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import structlog
import trio

from amqprouter.control import commands as c
from amqprouter.control import config_check, config_diff, tls_commands
from amqprouter.control.config_file import ConfigFileError, read_lines
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.control.socket_server import Reply
from amqprouter.net.tls_context import DIRECTIONS, TlsState
from amqprouter.observe import logging as router_logging
from amqprouter.text import escape

log = structlog.get_logger("amqprouter.control")

FAILED: Final = "Config reload failed: "
NO_CONFIG: Final = (
    "No configuration file to reload: amqprouter was started without --config "
    "(log files re-opened, TLS files re-read).\n"
)

#: The source of the one start-up line that cli.py applies before the file's (``-v``).
BELOW_FILE: Final = "--console-verbosity"

_TLS_SETTINGS = (c.TlsFile, c.TlsVerifyMode, c.TlsCiphersSet, c.TlsMinVersion)


class ReloadTarget(Protocol):
    """What a reload applies its commands through (the controller, holding its lock)."""

    @property
    def tls(self) -> TlsState: ...

    async def stage_routing(self, commands: Sequence[c.Command]) -> tuple[c.Command, str] | None:
        """Apply routing ``commands`` to one copy of the table and swap it in (None); or,
        on the first failure, change nothing and answer that command and its reply."""
        ...

    async def run_command(self, command: c.Command) -> Reply: ...


def parse_lines(lines: Sequence[tuple[str, str]]) -> list[tuple[str, c.Command]] | str:
    """Every line parsed, or ``<where>: <why>`` for the first that does not parse."""
    commands: list[tuple[str, c.Command]] = []
    for where, line in lines:
        command = parse(line)
        if isinstance(command, ParseError):
            return f"{where}: {command.reply.rstrip()}"
        if isinstance(command, c.Help) and line.split(" ", 1)[0].upper() != "HELP":
            return f"{where}: unknown command '{escape(line.split(' ', 1)[0])}'"
        commands.append((where, command))
    return commands


def _lenient(lines: Sequence[tuple[str, str]]) -> config_diff.State:
    """The state of lines that were applied at start (all of them parsed and ran)."""
    commands = [(where, parse(line)) for where, line in lines]
    state = config_diff.fold(
        [(where, cmd) for where, cmd in commands if not isinstance(cmd, ParseError)],
        strict=False,
    )
    assert not isinstance(state, config_diff.FoldError)  # only strict folds fail
    return state


class Reloader:
    """The ``--config`` file (``path``, None without one) and its state as last applied.

    ``setup`` is every start-up line with its source, as ``app.serve`` applied them:
    the file's lines are those whose source is ``<path>:<line>``; the ``-v`` line
    (``BELOW_FILE``) was applied before them, every other flag's after them.
    """

    def __init__(self, path: Path | None = None, setup: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        prefix = f"{path}:"
        in_file = [line for line in setup if path is not None and line[0].startswith(prefix)]
        below = [line for line in setup if line[0] == BELOW_FILE]
        above = [line for line in setup if line not in in_file and line not in below]
        # LOG FILE has no flag: its default is the level the files start at.
        self._under: config_diff.State = {
            ("log", "FILE"): (c.LogFile(router_logging.DEFAULT_FILE_VERBOSITY),),
            **_lenient(below),
        }
        self._over = _lenient(above)
        self._applied = self._effective(_lenient(in_file))
        self._tls_digests: dict[str, str] = {}
        # The start's own lines around the file, for CONFIG CHECK of the file.
        self._below_lines = below
        self._above_lines = above

    def _effective(self, file_state: config_diff.State) -> config_diff.State:
        return {**self._under, **file_state, **self._over}

    def started(self, tls: TlsState) -> None:
        """The start-up commands are applied: remember the TLS files as they are now."""
        self._tls_digests = _tls_digests(tls)

    async def reload(self, target: ReloadTarget, source: str) -> Reply:
        """One reload (see the module's docstring); ``source`` names what asked for it."""
        log_error = await _reopen_logs()
        if self.path is None:
            errors = self._reload_tls(target.tls, [])
            (log.warning if errors or log_error else log.info)(
                "reloaded without a config file",
                source=source,
                log_files=log_error or "re-opened",
                tls="; ".join(errors) or "re-read",
            )
            return Reply(NO_CONFIG + "".join(e + "\n" for e in errors), ok=False)
        planned = await self._plan()
        if isinstance(planned, str):
            return self._failed(source, planned, log_error)
        plan, origin = planned
        routing = plan.routing
        if routing.commands:
            failure = await target.stage_routing(routing.commands)
            if failure is not None:
                command, reply = failure
                why = f"{self._where(origin, command)}: {to_line(command)}: {reply}"
                return self._failed(source, why, log_error)
        self._update(routing)
        changes = list(routing.changes)
        errors = []
        for step in plan.steps:
            step_failure = await _apply(target, step)
            if step_failure is not None:
                command, reply = step_failure
                where = self._where(origin, command)
                errors.append(f"Failed: {where}: {to_line(command)}: {reply}")
                continue
            self._update(step)
            changes += step.changes
        errors = self._reload_tls(target.tls, changes) + errors
        if log_error:
            errors.append(f"Log file not re-opened: {log_error}")
        (log.info if not errors else log.warning)(
            "config reloaded" if not errors else "config reloaded with errors",
            source=source,
            file=str(self.path),
            changes="; ".join(changes) or "none",
            **({"errors": "; ".join(errors)} if errors else {}),
        )
        # One verdict: what changed and what failed; "No changes" only when neither.
        lines = changes + errors if changes or errors else ["No changes"]
        return Reply("".join(line + "\n" for line in lines), ok=not errors)

    def _where(self, origin: dict[c.Command, str], command: c.Command) -> str:
        """``<file>:<line>`` of the line that made ``command``; the file alone for a
        command a reload makes itself (a removed line's undo, a farm added again)."""
        return origin.get(command, str(self.path))

    def check(
        self, path: Path | None, listening: frozenset[int]
    ) -> str | list[config_check.Problem]:
        """CONFIG CHECK: every problem of ``path`` (None: the ``--config`` file), with the
        start's flags around it as at start; a text instead when there is nothing to
        check. Blocking (it binds ports and resolves names): run it in a thread."""
        path = path if path is not None else self.path
        if path is None:
            return (
                "No configuration file to check: amqprouter was started without --config "
                "(a reload re-opens the log files and re-reads the TLS files)."
            )
        try:
            lines = read_lines(path)
        except ConfigFileError as exc:
            return [config_check.Problem("", "", str(exc))]
        return config_check.check_lines(
            [*self._below_lines, *lines, *self._above_lines],
            listening=listening,
            log_files=router_logging.has_files(),
        )

    def _failed(self, source: str, why: str, log_error: str | None) -> Reply:
        log.warning(
            "config reload failed",
            source=source,
            file=str(self.path),
            error=why,
            **({"log_files": log_error} if log_error else {}),
        )
        return Reply(f"{FAILED}{why}\n", ok=False)

    async def _plan(self) -> tuple[config_diff.Plan, dict[c.Command, str]] | str:
        """What to apply, with the line each command of the file came from; or
        ``<file>[:<line>]: <why>`` when nothing can be."""
        assert self.path is not None
        try:
            lines = await trio.to_thread.run_sync(read_lines, self.path)
        except ConfigFileError as exc:
            return str(exc)
        commands = parse_lines(lines)
        if isinstance(commands, str):
            return commands
        state = config_diff.fold(commands, strict=True)
        if isinstance(state, config_diff.FoldError):
            return f"{state.where}: {state.reason}"
        plan = config_diff.diff(self._applied, self._effective(state))
        if isinstance(plan, str):
            return f"{self.path}: {plan}"
        return plan, {command: where for where, command in commands}

    def _update(self, step: config_diff.Step) -> None:
        for key, entry in step.updates:
            if entry is None:
                self._applied.pop(key, None)
            else:
                self._applied[key] = entry

    def _reload_tls(self, tls: TlsState, changes: list[str]) -> list[str]:
        """Re-read the TLS files; a line in ``changes`` for each direction whose files
        changed on disk; the errors."""
        errors = tls_commands.reload_files(tls)
        digests = _tls_digests(tls)
        for direction in DIRECTIONS:
            before = self._tls_digests.get(direction)
            if before is not None and digests[direction] != before:
                changes.append(f"Reloaded TLS {direction} files (changed on disk)")
        self._tls_digests = digests
        return errors


async def _apply(target: ReloadTarget, step: config_diff.Step) -> tuple[c.Command, str] | None:
    """Apply one step's commands: None, or the command that failed and its reply (a TLS
    direction's settings go together: the first of them is named)."""
    settings = [cmd for cmd in step.commands if isinstance(cmd, _TLS_SETTINGS)]
    if settings and len(settings) == len(step.commands):
        reply = tls_commands.execute_together(target.tls, settings)
        return None if reply.ok else (settings[0], f"TLS: {reply.text.rstrip()}")
    for command in step.commands:
        reply = await target.run_command(command)
        if not reply.ok:
            return command, reply.text.rstrip()
    return None


async def _reopen_logs() -> str | None:
    """Re-open the log file; None, or why it could not be."""
    try:
        await trio.to_thread.run_sync(router_logging.reopen_files)
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _tls_digests(tls: TlsState) -> dict[str, str]:
    """A digest of each direction's files as they are on disk now (what changed)."""
    digests: dict[str, str] = {}
    for direction in DIRECTIONS:
        settings = tls.settings(direction)
        digest = hashlib.sha256()
        for name in (
            settings.cert_chain_file,
            settings.key_file,
            settings.ca_file,
            settings.dh_file,
        ):
            if name is None:
                continue
            digest.update(name.encode() + b"\0")
            try:
                digest.update(Path(name).read_bytes())
            except OSError as exc:
                digest.update(f"unreadable: {exc}".encode())
        digests[direction] = digest.hexdigest()
    return digests
