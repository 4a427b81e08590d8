"""Shell completion for amqprouter_ctl, by click's mechanism (as for ``amqprouter``).

``_AMQPROUTER_CTL_COMPLETE=bash_source amqprouter_ctl`` prints the bash script
(``zsh_source``, ``fish_source`` the others); the script then runs amqprouter_ctl
with ``bash_complete`` and the words typed so far, and this module answers. Only
then are click and the daemon's grammar imported: plain use of amqprouter_ctl
needs neither.

The choices come from the grammar itself, so they cannot drift from it: a word of
the HELP text is offered where it fits, that is where ``grammar.parse`` treats it
otherwise than a word that means nothing (``_PROBE``). ``BACKEND`` then offers
``ADD``, ``PRINT``...; ``BACKEND DELETE`` offers nothing (any name goes there);
``STAT LISTEN json`` offers the filters. A first word with a ``/`` completes as a
file name (the socket).
"""

from __future__ import annotations

import re
from typing import Final

import click
from click.shell_completion import CompletionItem

COMPLETE_VAR: Final = "_AMQPROUTER_CTL_COMPLETE"
#: A word no command knows: where a word parses the same as it, any word goes.
_PROBE: Final = "ZZNOSUCHWORDZZ"
_WORD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def candidates(words: list[str], incomplete: str) -> list[str]:
    """The words that may follow ``words`` (a command's first words) and start with
    ``incomplete`` (in any case)."""
    from amqprouter.control.grammar import help_text, parse

    text = help_text()
    if not words:
        pool = sorted({line.split(" ", 1)[0] for line in text.splitlines()})
    else:
        prefix = " ".join(words) + " "

        def differs(word: str, after: str) -> bool:
            probe = repr(parse(prefix + _PROBE + after))
            # The grammar upper-cases subcommands, and an error may quote the word either way.
            return repr(parse(prefix + word + after)) not in (
                probe.replace(_PROBE, word),
                probe.replace(_PROBE, word.upper()),
            )

        def fits(word: str) -> bool:
            # LOG reads two words before it judges either: try one more after the word.
            return differs(word, "") or differs(word, " 1")

        fitting = {word for word in _WORD.findall(text) if fits(word)}
        # HELP's prose ("Print this help text") holds words that fit only because the
        # grammar upper-cases them: offer each once, as HELP spells the command.
        pool = sorted(w for w in fitting if w == w.upper() or w.upper() not in fitting)
    return [word for word in pool if word.lower().startswith(incomplete.lower())]


def _complete_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    words = list(ctx.params.get("args") or ())
    if words and "/" in words[0]:
        words = words[1:]  # the socket
    elif not words and "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    return [CompletionItem(word) for word in candidates(words, incomplete)]


def complete() -> int:
    """Answer the shell (click reads ``COMPLETE_VAR`` and the shell's own variables)."""
    command = click.Command(
        "amqprouter_ctl",
        params=[
            click.Option(["--json"], is_flag=True),
            click.Option(["--version"], is_flag=True),
            click.Option(["--allow-owner"], multiple=True),
            click.Argument(["args"], nargs=-1, shell_complete=_complete_args),
        ],
    )
    command.main(prog_name="amqprouter_ctl", complete_var=COMPLETE_VAR)
    return 0  # pragma: no cover - click exits after completing
