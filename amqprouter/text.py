"""Text that someone else chose, made safe to show: one escaping rule for every output.

A leaf module below every layer (it imports nothing of the router), so the control
replies (``control``, ``server``), the statistics text (``observe``) and anything
else that prints a client's vhost or a broker's words use the same rule.

The rule is the log lines' rule: structlog writes a value with ``repr()``, and
``escape(text)`` is exactly what ``repr(text)`` puts between its quotes. Every
character ``str.isprintable()`` rejects is written as Python writes it (``\\n``,
``\\x1b``, ``\\x85``, ``\\u2028``, ``\\u202e``), and a backslash is doubled, so an
escaped text can never end a line, move the cursor, colour a terminal, reorder what
follows it, or pass for an escape it is not. That covers C0, DEL, C1, Unicode line
and paragraph separators, bidi controls and every other format or unassigned code
point. Printable text, space included, is unchanged.

``unsafe_character(text)`` finds the characters a *name* may not hold at all (the
control grammar refuses them): the controls and separators that would break a line
or a terminal (C0, DEL, C1, U+2028, U+2029) and the bidi controls that reorder what
an operator reads. Every one of them is also escaped by ``escape``.
"""

from __future__ import annotations

import re
from typing import Final

# C0, DEL and C1; the line and paragraph separators; the bidi marks, embeddings,
# overrides and isolates (U+061C, U+200E/F, U+202A..E, U+2066..9). str.splitlines()
# breaks at several of these (\x1c..\x1e, \x85, U+2028, U+2029).
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """``text`` with every unprintable character and backslash escaped, as ``repr`` does."""
    if text.isprintable() and "\\" not in text:
        return text  # the usual case: nothing to do
    return "".join(_escape_character(character) for character in text)


def _escape_character(character: str) -> str:
    if character == "\\":
        return "\\\\"
    if character.isprintable():
        return character
    # repr() of one unprintable character is its escape between two quotes.
    return repr(character)[1:-1]


def unsafe_character(text: str) -> str | None:
    """The first character of ``text`` that no name may hold, or None."""
    match = _UNSAFE.search(text)
    return None if match is None else match.group()
