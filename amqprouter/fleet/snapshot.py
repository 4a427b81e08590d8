"""Applying a whole configuration text (CONFIG PRINT's) to a running router, as a diff.

The text and the router's own CONFIG PRINT are each folded into a state
(control/config_diff.py); the difference is applied the way a reload applies a changed
``--config`` file: the routing commands against one copy of the table, swapped in at
once or not at all, then the other settings. Unlike a reload, everything the text does
not name is removed: the text is the whole configuration, not one file's part of it.
"""

from __future__ import annotations

from typing import Protocol

from amqprouter.control import commands as c
from amqprouter.control import config_diff, tls_commands
from amqprouter.control.reload import ReloadTarget, parse_lines

_TLS_SETTINGS = (c.TlsFile, c.TlsVerifyMode, c.TlsCiphersSet, c.TlsMinVersion)


class SnapshotTarget(ReloadTarget, Protocol):
    def config_text(self) -> str: ...


def _state(text: str, *, strict: bool, source: str) -> config_diff.State | str:
    lines = [
        (f"{source}:{number}", line.strip())
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    commands = parse_lines(lines)
    if isinstance(commands, str):
        return commands
    state = config_diff.fold(commands, strict=strict)
    if isinstance(state, config_diff.FoldError):
        return f"{state.where}: {state.reason}"
    return state


async def apply_snapshot(target: SnapshotTarget, text: str, *, source: str) -> tuple[str, ...]:
    """Make ``target``'s configuration ``text`` (the caller holds the controller's lock);
    the change lines. Raises ``SnapshotError`` when part of it cannot be applied: the
    routing part is then unchanged, a setting applied before the failure stays."""
    wanted = _state(text, strict=True, source=source)
    if isinstance(wanted, str):
        raise SnapshotError(wanted)
    current = _state(target.config_text(), strict=False, source="running")
    assert not isinstance(current, str)  # CONFIG PRINT always parses
    plan = config_diff.diff(current, wanted)
    if isinstance(plan, str):
        raise SnapshotError(plan)
    if plan.routing.commands:
        error = await target.stage_routing(plan.routing.commands)
        if error:
            raise SnapshotError(error)
    for step in plan.steps:
        settings = [cmd for cmd in step.commands if isinstance(cmd, _TLS_SETTINGS)]
        if settings and len(settings) == len(step.commands):
            # A certificate and its key change together, as a reload changes them.
            reply = tls_commands.execute_together(target.tls, settings)
            if not reply.ok:
                raise SnapshotError(f"{', '.join(step.changes)}: {reply.text.rstrip()}")
            continue
        for command in step.commands:
            reply = await target.run_command(command)
            if not reply.ok:
                raise SnapshotError(f"{', '.join(step.changes)}: {reply.text.rstrip()}")
    return plan.changes


class SnapshotError(Exception):
    """A configuration text that cannot be applied; ``str()`` says where and why."""
