"""``amqprouter --help`` in sections, and every flag readable from an ``AMQPROUTER_*`` variable.

About thirty flags in one flat list hide the few an operator needs; click has no option
groups of its own, so each option carries the name of its section and the command
prints one section after another, in ``SECTIONS`` order. Each flag's environment
variable is derived from its first long name (``--listen-port`` reads
``AMQPROUTER_LISTEN_PORT``), so a service manager's environment file can configure the
router without a command line, and ``--help`` shows every name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

ENV_PREFIX: Final = "AMQPROUTER_"

#: The order of the sections in ``--help``; options without one (--version, --help) last.
SECTIONS: Final = (
    "Listening",
    "Routing (simple mode)",
    "TLS",
    "Broker connections",
    "Timeouts",
    "Logging",
    "Statistics and HTTP",
    "Control",
    "Fleet",
)
OTHER_SECTION: Final = "Other"

F = TypeVar("F", bound=Callable[..., Any])


def envvar_for(*declarations: str) -> str:
    """``AMQPROUTER_`` and the first long flag name (``--log-directory``: ``..._LOG_DIRECTORY``)."""
    long_name = next(name for name in declarations if name.startswith("--"))
    return ENV_PREFIX + long_name[2:].upper().replace("-", "_")


class SectionOption(click.Option):
    """A click option that knows its ``--help`` section and its aliases kept out of it."""

    def __init__(
        self, *args: Any, section: str, aliases: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        if section not in SECTIONS:
            raise ValueError(f"unknown --help section {section!r}")
        super().__init__(*args, **kwargs)
        self.section = section
        self.aliases = aliases

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        # The aliases parse like any name (click reads self.opts when parsing, never
        # here); only the help line leaves them out, so each option's line starts with
        # its one documented name instead of two spellings of it.
        every = self.opts
        self.opts = [name for name in every if name not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = every


def option(
    section: str, *declarations: str, aliases: tuple[str, ...] = (), **kwargs: Any
) -> Callable[[F], F]:
    """``click.option`` in ``section`` of ``--help``, also read from its ``AMQPROUTER_*`` variable.

    ``aliases`` (amqpprox's camelCase spellings) are accepted and left out of ``--help``;
    the command's epilog names them.
    """
    flags = [name for name in declarations if name.startswith("-")]
    names = [*flags, *aliases, *(name for name in declarations if not name.startswith("-"))]
    return click.option(
        *names,
        cls=SectionOption,
        section=section,
        aliases=aliases,
        envvar=envvar_for(*flags),
        show_envvar=True,
        **kwargs,
    )


class SectionedCommand(click.Command):
    """A command whose options are listed under their sections' headings."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, list[tuple[str, str]]] = {}
        for parameter in self.get_params(ctx):
            record = parameter.get_help_record(ctx)
            if record is not None:
                section = getattr(parameter, "section", OTHER_SECTION)
                records.setdefault(section, []).append(record)
        for section in (*SECTIONS, OTHER_SECTION):
            if section in records:
                with formatter.section(section):
                    formatter.write_dl(records[section])
