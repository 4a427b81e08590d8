r"""The words of a control line, and what the parsers read them as.

A line is lexed as amqpprox lexes it (reference/amqpprox.md section 1), so an amqpprox
operator's scripts work unchanged:

* The verb is the text up to the first space (a space, not any whitespace), upper-cased.
* The rest is split on any run of whitespace as C's ``isspace`` sees it in the C
  locale (amqpprox reads it with ``>>``), so extra spaces and tabs between words are
  fine, and trailing whitespace is insignificant.
* Ours: quoting as a POSIX shell does it, so that a word (a vhost: RabbitMQ allows
  ``my vhost``) may hold whitespace: ``'...'`` takes everything literally up to the
  next ``'``; ``"..."`` too, except that ``\"`` and ``\\`` are ``"`` and ``\``; outside
  quotes ``\`` takes the next character literally. Parts of one word join
  (``a'b c'd`` is ``ab cd``). An unterminated quote, a ``\`` at the end of the line
  and an empty word (``''``) are refused. A line without quotes or backslashes lexes
  as amqpprox lexes it. ``quote`` is the inverse (CONFIG PRINT).
* Keywords (subcommands, flags) are upper-cased ASCII-only, like ``boost::to_upper`` in
  the C locale (``str.upper`` would turn a long s, U+017F, into ``S``); names, vhosts,
  hosts, selectors and policies keep their case.
* No word may hold a control character, a line separator or a bidi control
  (``unsafe_word``).

Where this differs from amqpprox: docs/differences-from-amqpprox.md.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence

import attrs

from amqprouter.control.commands import Command
from amqprouter.text import escape, unsafe_character

# The control socket reads one line per command; 4096 characters is far more
# than any real command needs (a few names of at most 255 bytes) and keeps a runaway
# client from handing the parser megabytes.
MAX_LINE_LENGTH = 4096


@attrs.frozen
class ParseError:
    """A line that is not a valid command; ``reply`` is the exact text to send back."""

    reply: str


#: Whitespace as C's isspace() sees it in the C locale, which is what amqpprox's
#: ``>>`` extraction splits on; str.split() would also split on Unicode spaces. A
#: ``--config`` file's lines are stripped of these and nothing else.
WHITESPACE = " \t\n\v\f\r"
WHITESPACE_RUN = re.compile(f"[{re.escape(WHITESPACE)}]+")

_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# An optionally signed decimal integer, as ``>> int`` reads one, but only as a
# whole word. At most 9 significant digits: a longer number is refused like an
# overflowing ``>> int`` is, and int() never sees a huge string.
_INTEGER = re.compile(r"([+-]?)0*([0-9]{1,9})")

#: Parses the words after a verb, or after a subcommand.
Parser = Callable[[Sequence[str]], Command | ParseError]

INVALID_PORT = "Invalid port provided.\n"


#: What makes a word need quoting: whitespace, a quote or a backslash.
_NEEDS_QUOTES = re.compile(f"[{re.escape(WHITESPACE)}'\"\\\\]")


def split_words(rest: str) -> list[str] | ParseError:
    """The words of a line after its verb (quotes and backslashes taken out), or why
    they cannot be read."""
    if "'" not in rest and '"' not in rest and "\\" not in rest:
        return [word for word in WHITESPACE_RUN.split(rest) if word]  # amqpprox's way
    words: list[str] = []
    word: list[str] = []
    in_word = False  # a word has begun (an empty quoted part begins one)
    quote: str | None = None
    index = 0
    while index < len(rest):
        character = rest[index]
        index += 1
        if quote == "'":
            if character == "'":
                quote = None
            else:
                word.append(character)
        elif quote == '"':
            if character == '"':
                quote = None
            elif character == "\\" and index < len(rest) and rest[index] in '"\\':
                word.append(rest[index])
                index += 1
            else:
                word.append(character)
        elif character in WHITESPACE:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif character in "'\"":
            quote, in_word = character, True
        elif character == "\\":
            if index == len(rest):
                return ParseError("A backslash at the end of the line escapes nothing.\n")
            word.append(rest[index])
            index += 1
            in_word = True
        else:
            word.append(character)
            in_word = True
    if quote is not None:
        return ParseError(f"Unterminated {quote} quote.\n")
    if in_word:
        words.append("".join(word))
    if any(not word for word in words):
        return ParseError("An empty word ('' or \"\") names nothing.\n")
    return words


def quote(word: str) -> str:
    """``word`` as ``split_words`` reads it back: as it is when it needs no quotes (every
    amqpprox word), else in single quotes, or double ones when it holds a ``'``."""
    if word and not _NEEDS_QUOTES.search(word):
        return word
    if "'" not in word:
        return f"'{word}'"
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def upper(word: str) -> str:
    return word.translate(_ASCII_UPPER)


def integer(word: str) -> int | None:
    match = _INTEGER.fullmatch(word)
    if match is None:
        return None
    sign, digits = match.groups()
    return -int(digits) if sign == "-" else int(digits)


def port_number(word: str) -> int | None:
    value = integer(word)
    return value if value is not None and 1 <= value <= 65535 else None


def unsafe_word(words: Sequence[str]) -> ParseError | None:
    """A refusal of the first word holding a control character or a line separator.

    Checked before any verb reads its words, so no name, vhost, host, selector or
    policy ever holds one: such a name would forge lines in MAP PRINT or BACKEND
    PRINT, and CONFIG PRINT would write a line that a ``--config`` file (or any
    reader that splits lines the Unicode way) reads back as two commands. Any other
    word holding one is refused too, and no error text ever echoes one raw.
    """
    for word in words:
        character = unsafe_character(word)
        if character is not None:
            return ParseError(
                f"Word '{escape(word)}' contains {escape(character)}: no word may contain "
                "a control character, a line separator or a bidi control.\n"
            )
    return None


_CAPITAL_WORDS = re.compile(r"[A-Z_]+")


def with_choices(
    sentence: str, choices: Sequence[str], *, word: str | None = None, what: str = "subcommands"
) -> str:
    """An error ``sentence`` (amqpprox's words) that also names ``word`` and the valid choices.

    ``Unknown subcommand.`` becomes ``Unknown subcommand: 'X'; valid subcommands: A, B.``:
    the reference's first words stay first (scripts match them), the word is named
    unless the sentence already quotes it, and the reply ends with its newline.
    """
    text = sentence.rstrip("\n").removesuffix(".")
    if word is not None and f"'{word}'" not in text:
        text += f": '{escape(word)}'"
    return f"{text}; valid {what}: {', '.join(choices)}.\n"


def subcommands(
    table: Mapping[str, Parser], *, missing: str, unknown: Callable[[str], str]
) -> Parser:
    """A verb whose first word picks a subcommand from ``table``.

    ``missing`` and ``unknown`` are that verb's own error texts (amqpprox words
    them differently for every verb); the reply adds the word and the table's
    subcommands (``with_choices``), unless the text already names every one of
    them (STAT's ``Only LISTEN, SEND, ... are supported.``).
    """
    choices = list(table)

    def explain(sentence: str, word: str | None) -> str:
        if set(choices) <= set(_CAPITAL_WORDS.findall(sentence)):
            return sentence if sentence.endswith("\n") else sentence + "\n"
        return with_choices(sentence, choices, word=word)

    def parse_verb(args: Sequence[str]) -> Command | ParseError:
        if not args:
            return ParseError(explain(missing, None))
        subcommand = upper(args[0])
        parse_args = table.get(subcommand)
        if parse_args is None:
            return ParseError(explain(unknown(subcommand), subcommand))
        return parse_args(args[1:])

    return parse_verb


def not_recognized(subcommand: str) -> str:
    """BACKEND's and FARM's reply to an unknown subcommand (amqpprox's words)."""
    return f"Subcommand '{subcommand}' not recognized."
