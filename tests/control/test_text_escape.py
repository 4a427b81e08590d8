"""``amqprouter.text``: the one escaping rule of control replies, the same as the log's."""

from __future__ import annotations

import ast

from hypothesis import given
from hypothesis import strategies as st

from amqprouter.text import escape, unsafe_character
from tests import hypothesis_profiles

assert hypothesis_profiles.PROFILE  # the profiles are loaded by importing the module

#: Any text, with the characters that matter drawn often.
texts = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from("\n\r\t\x00\x1b\x7f\x85\x9b\xa0\u2028\u2029\u202e\u2066\\ 'a"),
    )
)


@given(texts)
def test_escaped_text_is_printable_and_holds_nothing_unsafe(text: str) -> None:
    escaped = escape(text)
    assert escaped.isprintable()
    assert unsafe_character(escaped) is None
    assert escaped.splitlines() in ([escaped], [])


@given(texts.filter(lambda text: "'" not in text and '"' not in text))
def test_escape_is_what_repr_writes_as_the_log_lines_do(text: str) -> None:
    # structlog writes a log value with repr(): the same escapes, without the quotes,
    # and unambiguous: Python reads the escaped text back as the original.
    assert escape(text) == repr(text)[1:-1]
    assert ast.literal_eval(f"'{escape(text)}'") == text


def test_examples() -> None:
    assert escape("plain /vhost é 🐇") == "plain /vhost é 🐇"
    assert escape("/x\nid=999 vhost=evil\x1b[31m") == "/x\\nid=999 vhost=evil\\x1b[31m"
    assert escape("a\\nb") == "a\\\\nb"  # a backslash cannot pass for an escape
    assert escape("\x85\u2028\u202e\xa0\t\r") == "\\x85\\u2028\\u202e\\xa0\\t\\r"


def test_unsafe_characters_are_controls_separators_and_bidi_controls() -> None:
    unsafe = [chr(n) for n in range(0x3000) if unsafe_character(chr(n)) is not None]
    expected = [chr(n) for n in (*range(0x20), *range(0x7F, 0xA0))]
    expected += ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    expected += [chr(n) for n in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
    assert unsafe == expected
    assert unsafe_character("name\xa0\u3000\u200b") is None  # odd, but harmless
    assert unsafe_character("ab\u2028c\x1b") == "\u2028"
