"""One control line in, one ``Command`` or ``ParseError`` out: the verb table and the
checks every line gets (length, unsafe words, words after the ones a command uses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amqprouter.control.commands import Command, Help
from amqprouter.control.grammar import auth, limit, listen, process, routing, sessions, stat, tls
from amqprouter.control.grammar.help import unknown_verb
from amqprouter.control.grammar.unparse import words_of
from amqprouter.control.grammar.words import (
    MAX_LINE_LENGTH,
    WHITESPACE,
    ParseError,
    Parser,
    quote,
    split_words,
    unsafe_word,
    upper,
)
from amqprouter.text import escape

#: Verb → parser of the words after it. A new verb adds its parser here and its line
#: to ``help.HELP_TEXTS``.
VERBS: Mapping[str, Parser] = {
    "AUTH": auth.AUTH,
    "BACKEND": routing.BACKEND,
    "CONFIG": process.CONFIG,
    "COMPLETE": process.COMPLETE,
    "CONN": sessions.CONN,
    "DATACENTER": process.DATACENTER,
    "EXIT": process.EXIT,
    "FARM": routing.FARM,
    "HELP": lambda args: Help(),
    "LIMIT": limit.LIMIT,
    "LISTEN": listen.LISTEN,
    "LOG": process.LOG,
    "MAP": routing.MAP,
    "MAPHOSTNAME": process.MAPHOSTNAME,
    "RULE": routing.RULE,
    "STAT": stat.STAT,
    "SESSION": sessions.SESSION,
    "TLS": tls.TLS,
    "VHOST": sessions.VHOST,
}


def parse(line: str) -> Command | ParseError:
    """Parse one control line (its ``\\n`` or ``\\r\\n`` terminator optional).

    Returns:
        The command, ``Help()`` for an empty line, or a ``ParseError`` whose
        ``reply`` is the exact text to answer with (``unknown_verb`` for a verb
        the grammar does not know).
    """
    line = line.removesuffix("\n").removesuffix("\r")
    if len(line) > MAX_LINE_LENGTH:
        return ParseError("Command line too long.\n")
    verb, _, rest = line.partition(" ")
    parse_verb = VERBS.get(upper(verb))
    if parse_verb is None:
        if not line.strip(WHITESPACE):
            return Help()  # an empty line, as amqpprox answers it
        return ParseError(unknown_verb(verb))
    words = split_words(rest)
    if isinstance(words, ParseError):
        return words
    unsafe = unsafe_word(words)
    if unsafe is not None:
        return unsafe
    command = parse_verb(words)
    if isinstance(command, ParseError | Help):
        return command
    return _refuse_unused_words(words, command)


def _refuse_unused_words(words: Sequence[str], command: Command) -> Command | ParseError:
    """``command``, unless the line had words after the ones it uses.

    amqpprox ignores such words; we refuse them, since an ignored word is an
    option the operator believes is in force (``LISTEN START 5673 ACCEPT-PROXI``
    would start a listener that takes no PROXY header). The canonical line says how
    many words the command uses: defaults only ever add words to it, never remove them.
    """
    used = words_of(command)
    if len(words) <= len(used) - 1:  # ``used`` starts with the verb
        return command
    extra = words[len(used) - 1]
    line = " ".join(quote(word) for word in used)
    return ParseError(f"Unexpected word '{escape(extra)}': '{line}' takes no more words.\n")
