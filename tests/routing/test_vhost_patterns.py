"""Vhost patterns: exact names first, then the most specific pattern (most literal
characters, then fewest ``*``, then mapped first); ``*`` matches any run, itself included."""

from __future__ import annotations

import pytest

from amqprouter.routing import Backend, Farm, NoRoute, RoutingTable
from amqprouter.routing.model import DEFAULT_MAPPING
from amqprouter.routing.vhost_patterns import MEMO_SIZE, VhostPatterns, specificity


def patterns(*names: str) -> VhostPatterns[int]:
    return VhostPatterns((name, index) for index, name in enumerate(names))


@pytest.mark.parametrize(
    ("vhost", "expected"),
    [
        ("tenant-1-eu", "tenant-*-eu"),  # 9 literal characters beat 7
        ("tenant-1", "tenant-*"),
        ("tenant-", "tenant-*"),  # the empty run
        ("x.eu", "*.eu"),
        ("a*b", "a*b"),  # * matches itself
        ("ab", "a*b"),
        ("line\nbreak", "*"),  # any character, a newline too
        ("", "*"),
    ],
)
def test_the_most_specific_pattern_wins(vhost: str, expected: str) -> None:
    table = patterns("*", "tenant-*", "*.eu", "tenant-*-eu", "a*b")
    found = table.match(vhost)
    assert found is not None and found[0] == expected


def test_order_is_literals_then_fewer_wildcards_then_first_mapped() -> None:
    table = patterns("b-*", "a-*", "*a*", "x*y*z", "xy*z", "*")
    assert [name for name, _ in table.ordered] == ["xy*z", "x*y*z", "b-*", "a-*", "*a*", "*"]
    assert specificity("xy*z") < specificity("x*y*z") < specificity("b-*")


def test_ties_go_to_the_first_mapped() -> None:
    assert patterns("a*", "*a").match("aa") == ("a*", 0)
    assert patterns("*a", "a*").match("aa") == ("*a", 0)


def test_no_match_and_no_patterns() -> None:
    assert patterns("tenant-*").match("other") is None
    assert patterns().match("x") is None
    assert not patterns()


def test_regex_characters_are_literal() -> None:
    table = patterns("a.b*", "(x)|*")
    assert table.match("aXb") is None
    assert table.match("a.b1") == ("a.b*", 0)
    assert table.match("(x)|y") == ("(x)|*", 1)


def test_memo_is_bounded() -> None:
    table = patterns("v-*")
    for index in range(MEMO_SIZE * 2 + 5):
        assert table.match(f"v-{index}") is not None
    assert len(table._memo) <= MEMO_SIZE


def _table(mappings: dict[str, tuple[str, str]], default: str | None = None) -> RoutingTable:
    backends = {n: Backend(n, "dc", f"{n}.example", 5672) for n in ("b1", "b2", "b3")}
    return RoutingTable(
        backends=backends,
        farms={"f": Farm("f", members=("b2", "b3"))},
        mappings=mappings,
        default_farm=default,
    )


def test_exact_beats_pattern_beats_default() -> None:
    table = _table({"tenant-*": ("backend", "b1"), "tenant-gold": ("farm", "f")}, default="f")
    exact = table.route("tenant-gold")
    assert exact.mapping == "tenant-gold" and exact.farm is not None
    pattern = table.route("tenant-silver")
    assert pattern.mapping == "tenant-*" and [b.name for b in pattern.candidates] == ["b1"]
    default = table.route("other")
    assert default.mapping == DEFAULT_MAPPING


def test_a_pattern_to_nothing_names_the_pattern() -> None:
    with pytest.raises(NoRoute) as caught:
        _table({"*.eu": ("farm", "nope")}).route("x.eu")
    assert (
        caught.value.detail
        == "vhost x.eu matches '*.eu', mapped to farm nope, which does not exist"
    )
    assert str(caught.value) == "No known broker mapping for vhost x.eu"


def test_mapping_order_lists_exact_then_patterns() -> None:
    table = _table(
        {
            "b*": ("backend", "b1"),
            "z": ("backend", "b1"),
            "ab*": ("backend", "b2"),
            "a": ("farm", "f"),
        }
    )
    assert [v for v, _t in table.mapping_order()] == ["a", "z", "ab*", "b*"]
