"""What may come next on a control line: ``COMPLETE words...``, which amqprouter_ctl's
shell completion asks the router (one small query: the router has the grammar loaded and
knows the live names, so a Tab costs the client no heavy import).

Keywords come from the grammar itself, so they cannot drift from it: a word of the HELP
text is offered where it fits, that is where ``grammar.parse`` treats it otherwise than
a word that means nothing (``_PROBE``). ``BACKEND`` then offers ``ADD``, ``PRINT``...;
``STAT LISTEN json`` offers the filters. Where a name goes, the live names are offered
(``NAME_SLOTS``): backends after ``BACKEND DELETE``, farms after ``MAP FARM vhost``,
vhosts (mapped, and seen from clients) after ``VHOST PAUSE``. Names are quoted as the
grammar reads them back, and a name holding what no word may hold is left out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Final

import attrs

from amqprouter.control.grammar import help_text, parse
from amqprouter.control.grammar.words import quote, upper
from amqprouter.text import unsafe_character

#: A word no command knows: where a word parses the same as it, any word goes.
_PROBE: Final = "ZZNOSUCHWORDZZ"
_WORD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


@attrs.frozen
class Names:
    """The live names a completion may offer."""

    backends: Collection[str] = ()
    farms: Collection[str] = ()
    vhosts: Collection[str] = ()


_LIMIT_KINDS = ("CONN_RATE", "CONN_RATE_ALARM", "DATA_RATE", "DATA_RATE_ALARM", "CONNECTIONS")


def _slot(words: Sequence[str]) -> str | None:
    """Which kind of name goes after ``words`` (upper-cased keywords), if one does."""
    keywords = [upper(word) for word in words]
    match keywords:
        case ["BACKEND", "DELETE" | "DISABLE" | "ENABLE" | "DRAIN" | "CHECK"]:
            return "backends"
        case ["FARM", "DELETE" | "PARTITION" | "ON_DOWN"] | ["MAP", "DEFAULT"]:
            return "farms"
        case ["FARM", "ADD", _, _, *_]:
            return "backends"
        case ["MAP", "BACKEND" | "FARM" | "UNMAP"]:
            return "vhosts"
        case ["MAP", "BACKEND", _]:
            return "backends"
        case ["MAP", "FARM", _]:
            return "farms"
        case ["VHOST", "PAUSE" | "UNPAUSE" | "BACKEND_DISCONNECT" | "FORCE_DISCONNECT" | "TRACE"]:
            return "vhosts"
        case ["LIMIT", "PRINT"]:
            return "vhosts"
        case ["LIMIT", kind, "VHOST"] if kind in _LIMIT_KINDS:
            return "vhosts"
        case ["LIMIT", "DISABLE", kind, "VHOST"] if kind in _LIMIT_KINDS:
            return "vhosts"
    return None


def keywords(words: Sequence[str]) -> list[str]:
    """The grammar's words that may follow ``words`` (a command's first words)."""
    text = help_text()
    if not words:
        return sorted({line.split(" ", 1)[0] for line in text.splitlines()})
    prefix = " ".join(quote(word) for word in words)

    def differs(word: str, after: str) -> bool:
        probe = repr(parse(f"{prefix} {_PROBE}{after}"))
        # The grammar upper-cases subcommands, and an error may quote the word either way.
        return repr(parse(f"{prefix} {word}{after}")) not in (
            probe.replace(_PROBE, word),
            probe.replace(_PROBE, word.upper()),
        )

    def fits(word: str) -> bool:
        # LOG reads two words before it judges either: try one more after the word.
        return differs(word, "") or differs(word, " 1")

    fitting = {word for word in _WORD.findall(text) if fits(word)}
    # HELP's prose ("Print this help text") holds words that fit only because the
    # grammar upper-cases them: offer each once, as HELP spells the command.
    return sorted(w for w in fitting if w == w.upper() or w.upper() not in fitting)


def candidates(words: Sequence[str], names: Names = Names()) -> list[str]:
    """What may follow ``words``: the grammar's keywords, then the live names that fit
    there (quoted as a control line reads them)."""
    offered = keywords(words)
    slot = _slot(words)
    if slot is not None:
        pool: Collection[str] = getattr(names, slot)
        offered += [quote(name) for name in sorted(pool) if unsafe_character(name) is None]
    return offered
