"""Property tests of the control grammar (hypothesis): parse never raises, and every
command it accepts is written back by ``to_line`` as a line that parses to it again.

Lines are drawn two ways: arbitrary text (anything a socket or a file can hold), and
lines built from the grammar's own words (every verb, subcommand, flag and filter, in
any case, with numbers at and past their bounds) mixed with random words that hold
the characters that broke things before: line separators, C0 and C1 controls, NBSP,
escapes, quotes. The example count comes from ``tests/hypothesis_profiles.py``.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from amqprouter.control.commands import Command, Exit, MapBackend, VhostPause
from amqprouter.control.grammar import WHITESPACE, ParseError, parse, to_line
from amqprouter.text import unsafe_character
from tests import hypothesis_profiles

assert hypothesis_profiles.PROFILE  # the profiles are loaded by importing the module


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


VERBS = _split(
    "BACKEND CONFIG CONN DATACENTER EXIT FARM HELP LISTEN LOG MAP MAPHOSTNAME STAT "
    "SESSION VHOST TLS LIMIT AUTH NOSUCH"
)
KEYWORDS = _split(
    "ADD ADD_DNS DELETE DISABLE ENABLE DRAIN PRINT CHECK ON OFF GRACEFUL FORCE "
    "ADD_MANUAL PARTITION ON_DOWN DISCONNECT KEEP BACKEND FARM UNMAP DEFAULT "
    "REMOVE_DEFAULT START START_SECURE STOP SET CONSOLE FILE DNS LISTEN SEND ALL json "
    "human overall all all-except-per-source process bufferpool vhost=v backend=b "
    "source=s vhost= =v vhost=a=b per-source PAUSE UNPAUSE DISCONNECT_GRACEFUL "
    "FORCE_DISCONNECT BACKEND_DISCONNECT SEND-PROXY TLS ACCEPT-PROXY FROM ALLOW round-robin "
    "10.0.0.0/8 ::1 ::ffff:10.0.0.1 ::ffff:10.0.0.0/104 "
    "datacenter-affinity SERVICE ALWAYS_ALLOW /auth RELOAD"
)
NUMBERS = _split(
    "0 1 5 6 9 10 5672 65535 65536 -1 +3 -0 007 2.5 0.5 1e3 0.0000001 0.000000001 "
    "123456789 1234567890 123456789.123456789 999999999.999999999 3600000 3600001"
)
#: Characters that broke a round trip or an output before, and their neighbours.
AWKWARD = (
    "\u2028\u2029\x85\x1c\x1d\x1e\x1b\x00\x7f\x9b\xa0\u200b\u202e\u2066\ufeff\ufffd"
    "\u017f\u0131#=\\'\"-_./:"
)
#: What may stand between two words: the grammar's whitespace, and things that are not.
SEPARATORS = (" ", "  ", "\t", " \t ", "\v", "\f", "\r", "\xa0", "\u2028", "\u3000")

_letters = st.characters(codec="utf-8", exclude_characters=WHITESPACE)
random_words = st.text(
    st.one_of(st.sampled_from(AWKWARD), _letters, st.sampled_from("abcXYZ019")),
    min_size=1,
    max_size=12,
)


@st.composite
def cased(draw: st.DrawFn, words: st.SearchStrategy[str]) -> str:
    word = draw(words)
    return draw(st.sampled_from((word, word.lower(), word.upper(), word.capitalize())))


grammar_words = st.one_of(cased(st.sampled_from(KEYWORDS)), st.sampled_from(NUMBERS), random_words)


#: The shapes of the commands, so that most lines are near-misses or accepted commands:
#: {n} a name, {p} a port, {x} a number, {k} a keyword (each may be any of the others).
TEMPLATES = (
    "BACKEND ADD {n} {n} {n} {p} {k}",
    "BACKEND ADD_DNS {n} {n} {n} {p}",
    "BACKEND DELETE {n}",
    "BACKEND DISABLE {n}",
    "BACKEND ENABLE {n}",
    "BACKEND DRAIN {n} {k}",
    "BACKEND CHECK {n} ON {x} {x} {x} {x}",
    "BACKEND CHECK {n} OFF",
    "BACKEND PRINT",
    "FARM ADD {n} {n} {n} {n} {n}",
    "FARM ADD_MANUAL {n} {n}",
    "FARM PARTITION {n} {n}",
    "FARM ON_DOWN {n} {k}",
    "FARM DELETE {n}",
    "MAP BACKEND {n} {n}",
    "MAP FARM {n} {n}",
    "MAP UNMAP {n}",
    "MAP DEFAULT {n}",
    "MAP REMOVE_DEFAULT",
    "LISTEN START {p}",
    "LISTEN START_SECURE {p}",
    "LISTEN STOP {p}",
    "DATACENTER SET {n}",
    "LOG CONSOLE {x}",
    "LOG FILE {x}",
    "STAT LISTEN {k} {k}",
    "STAT SEND {n} {p} {k}",
    "STAT STOP {k}",
    "STAT ENABLE {k}",
    "SESSION {x} {k}",
    "VHOST PAUSE {n}",
    "VHOST BACKEND_DISCONNECT {n}",
    "VHOST PRINT",
    "EXIT GRACEFUL {x}",
    "CONFIG PRINT",
    "CONFIG RELOAD",
    "MAPHOSTNAME DNS",
    "CONN",
    "HELP {n}",
)
names = st.one_of(st.sampled_from(("b1", "f1", "v", "/", "dc1", "round-robin")), random_words)
_slots = {
    "n": st.one_of(names, names, grammar_words),
    "p": st.one_of(st.integers(0, 70000).map(str), grammar_words),
    "x": st.one_of(st.sampled_from(NUMBERS), st.integers(-5, 4_000_000).map(str)),
    "k": cased(st.sampled_from(KEYWORDS)),
}
#: Mostly a plain space between words, sometimes anything.
_separators = st.sampled_from((" ",) * 4 * len(SEPARATORS) + SEPARATORS)


@st.composite
def grammar_lines(draw: st.DrawFn) -> str:
    """A command's shape, its slots filled, maybe cut short or extended, in any case."""
    if draw(st.integers(0, 9)) == 0:
        verb = draw(st.one_of(cased(st.sampled_from(VERBS)), random_words))
        words = [verb, *draw(st.lists(grammar_words, max_size=8))]
    else:
        template = draw(st.sampled_from(TEMPLATES)).split()
        words = [
            draw(_slots[word[1]]) if word.startswith("{") else draw(cased(st.just(word)))
            for word in template
        ]
        words = words[: draw(st.integers(1, len(words)))] if draw(st.booleans()) else words
        words += draw(st.lists(grammar_words, max_size=2))
    line = words[0]
    for word in words[1:]:
        line += draw(_separators) + word
    line += draw(st.sampled_from(("", " ", "\r", "\n", "\r\n", " \t")))
    return line


def _check_reply(result: Command | ParseError) -> None:
    if isinstance(result, ParseError):
        # An error may quote the operator's word, never a raw control or separator.
        assert unsafe_character(result.reply.removesuffix("\n")) is None, result.reply


@given(st.text(st.characters(codec="utf-8")))
def test_parse_never_raises_on_any_text(line: str) -> None:
    _check_reply(parse(line))


@given(grammar_lines())
def test_parse_never_raises_on_grammar_lines(line: str) -> None:
    _check_reply(parse(line))


@given(grammar_lines())
@example("MAP BACKEND v b1")
@example("EXIT GRACEFUL 0.0000001")
@example("EXIT GRACEFUL 123456789.123456789")
@example("DATACENTER SET")
@example("MAP BACKEND v b1\xa0")
def test_every_accepted_command_is_written_back_exactly(line: str) -> None:
    command = parse(line)
    if isinstance(command, ParseError):
        return
    written = to_line(command)
    assert parse(written) == command
    # One line, and nothing in it that a reader could take for the end of one.
    assert "\n" not in written and unsafe_character(written) is None
    assert written.splitlines() == [written]


# --------------------------------------------------------------------------- #
# inputs that once broke the round trip, kept as regression cases
# --------------------------------------------------------------------------- #


def test_a_line_separator_in_a_name_is_refused_naming_the_word_escaped() -> None:
    # Was accepted; CONFIG PRINT then wrote a line that --config read as two, the
    # second being EXIT.
    assert parse("MAP BACKEND v b1\u2028EXIT") == ParseError(
        "Word 'b1\\u2028EXIT' contains \\u2028: no word may contain a control character, "
        "a line separator or a bidi control.\n"
    )


def test_every_splitlines_boundary_and_control_is_refused_in_a_word() -> None:
    for character in "\x1c\x1d\x1e\x85\u2028\u2029\x00\x1b\x7f\x9b\u202e\u2066":
        result = parse(f"MAP BACKEND v{character}x b1")
        assert isinstance(result, ParseError), repr(character)
        assert unsafe_character(result.reply.removesuffix("\n")) is None


def test_a_forged_vhost_is_refused_wherever_a_vhost_goes() -> None:
    forged = "/x\x1bid=999"
    for line in (f"VHOST PAUSE {forged}", f"MAP UNMAP {forged}", f"MAP FARM {forged} f"):
        result = parse(line)
        assert result == ParseError(
            "Word '/x\\x1bid=999' contains \\x1b: no word may contain a control "
            "character, a line separator or a bidi control.\n"
        )


def test_other_unicode_stays_in_names_and_round_trips() -> None:
    # NBSP, an ideographic space and a zero-width space are not the grammar's
    # whitespace: they stay in the name (they used to be stripped from a --config line).
    for name in ("b1\xa0", "\xa0b1", "b\u3000c", "b\u200bc", "caf\u00e9", "\U0001f407"):
        command = parse(f"MAP BACKEND v {name}")
        assert command == MapBackend("v", name)
        assert parse(to_line(command)) == command
    assert parse("VHOST PAUSE /\u00e9") == VhostPause("/\u00e9")


def test_exit_graceful_seconds_are_written_without_an_exponent() -> None:
    for word, seconds in (("0.0000001", 1e-7), ("123456789.5", 123456789.5), ("2.5", 2.5)):
        command = parse(f"EXIT GRACEFUL {word}")
        assert command == Exit(graceful=True, seconds=seconds)
        assert parse(to_line(command)) == command


# --------------------------------------------------------------------------- #
# Quoting: any vhost name RabbitMQ allows goes through CONFIG PRINT and back

#: A vhost as RabbitMQ allows one: any non-empty UTF-8 text of at most 255 bytes (the
#: AMQP shortstr that Connection.Open carries it in), spaces, quotes and backslashes
#: included; less what no control word may hold (control characters, line separators,
#: bidi controls: they would forge lines on an operator's screen).
rabbitmq_vhosts = st.text(
    st.one_of(st.sampled_from(" '\"\\#/%é\u00a0"), st.characters(codec="utf-8")),
    min_size=1,
).filter(lambda name: len(name.encode()) <= 255 and unsafe_character(name) is None)


@given(rabbitmq_vhosts)
@example("my vhost")
@example(" leading and trailing ")
@example('it\'s "quoted" \\ back')
def test_any_vhost_rabbitmq_allows_round_trips_through_config_print(vhost: str) -> None:
    for command in (MapBackend(vhost, "rabbit1"), VhostPause(vhost)):
        line = to_line(command)
        assert parse(line) == command
        # One line, with nothing in it a terminal acts on.
        assert unsafe_character(line) is None
