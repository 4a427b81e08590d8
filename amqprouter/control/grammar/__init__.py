"""The control-command grammar: one text line in, one ``Command`` or ``ParseError`` out.

Pure functions, no I/O. The grammar, its case rules and its error texts are amqpprox's
(reference/amqpprox.md section 1), so an amqpprox operator's scripts work unchanged;
where and why ours differs: docs/differences-from-amqpprox.md (control plane) and
docs/control.md. Whether a backend, farm, selector or policy exists is not the parser's
business: that is checked when the command runs.

``words`` lexes a line, ``line`` parses it with one parser module per verb family
(``routing``, ``listen``, ``auth``, ``process``, ``stat``, ``tls``, ``limit``,
``sessions``), ``help`` answers HELP, and ``unparse`` writes a command back as its line.
"""

from __future__ import annotations

from amqprouter.control.grammar.help import help_text, unknown_verb
from amqprouter.control.grammar.line import parse
from amqprouter.control.grammar.unparse import to_line
from amqprouter.control.grammar.words import (
    MAX_LINE_LENGTH,
    WHITESPACE,
    ParseError,
    with_choices,
)

__all__ = [
    "MAX_LINE_LENGTH",
    "WHITESPACE",
    "ParseError",
    "help_text",
    "parse",
    "to_line",
    "unknown_verb",
    "with_choices",
]
