"""Client-address rules: matching (IPv4, IPv6, IPv4-mapped), and how they combine with
the vhost's mapping: the first applying rule narrows, BREAK refuses when its backends
are all down, CONTINUE goes on, a rule that shares nothing with the mapping is skipped."""

from __future__ import annotations

import attrs
import pytest

from amqprouter.protocol import constants
from amqprouter.routing import Backend, Farm, NoRoute, RoutingTable
from amqprouter.routing.client_rules import Rule, address_key

NAMES = ("a1", "a2", "b1", "b2")


def table(*rules: Rule) -> RoutingTable:
    return RoutingTable(
        backends={n: Backend(n, "dc", f"{n}.example", 5672) for n in NAMES},
        farms={
            "all": Farm("all", members=NAMES),
            "site-a": Farm("site-a", members=("a1", "a2")),
            "site-b": Farm("site-b", members=("b1", "b2")),
            "other": Farm("other", members=("a1",)),
        },
        mappings={"v": ("farm", "all"), "only-b": ("farm", "site-b"), "direct": ("backend", "a1")},
        rules=rules,
    )


def firsts(routing: RoutingTable, client: str | None, count: int = 8, **kw: object) -> set[str]:
    seen = set()
    for _ in range(count):
        route = routing.route("v", client, **kw)  # type: ignore[arg-type]
        seen.add(route.candidates[0].name)
        route.release()
    return seen


def test_address_keys() -> None:
    assert address_key("10.0.0.1") == (4, 0x0A000001)
    assert address_key("::ffff:10.0.0.1") == (4, 0x0A000001)  # mapped: as IPv4
    assert address_key("2001:db8::1") == (6, 0x20010DB8 << 96 | 1)
    assert address_key("fe80::1%eth0") == (6, 0xFE80 << 112 | 1)
    assert address_key("not an address") is None


def test_rule_matches_its_networks_only() -> None:
    rule = Rule(1, ("10.1.0.0/16", "2001:db8::/32"), ("farm", "site-a"))
    assert rule.matches(address_key("10.1.2.3"))  # type: ignore[arg-type]
    assert rule.matches(address_key("::ffff:10.1.2.3"))  # type: ignore[arg-type]
    assert rule.matches(address_key("2001:db8:1::5"))  # type: ignore[arg-type]
    assert not rule.matches(address_key("10.2.0.1"))  # type: ignore[arg-type]
    assert not rule.matches(address_key("2001:db9::1"))  # type: ignore[arg-type]
    # An IPv4 network never matches an IPv6 address with the same low bits.
    assert not Rule(1, ("0.0.0.0/0",), ("farm", "x")).matches((6, 5))


def test_a_matching_rule_narrows_the_farm_and_others_keep_it_whole() -> None:
    routing = table(Rule(10, ("10.1.0.0/16",), ("farm", "site-a")))
    assert firsts(routing, "10.1.0.5") == {"a1", "a2"}
    assert firsts(routing, "10.9.0.5") == set(NAMES)
    assert firsts(routing, None) == set(NAMES)  # no address: no rule
    route = routing.route("v", "10.1.0.5")
    assert route.rule is not None and route.rule.priority == 10
    assert [b.name for b in route.candidates] in (["a1", "a2"], ["a2", "a1"])  # no failover out


def test_lowest_priority_first() -> None:
    routing = table(
        Rule(20, ("10.0.0.0/8",), ("farm", "site-b")),
        Rule(10, ("10.1.0.0/16",), ("farm", "site-a")),
    )
    assert [r.priority for r in routing.rules] == [10, 20]
    assert firsts(routing, "10.1.0.5") == {"a1", "a2"}
    assert firsts(routing, "10.2.0.5") == {"b1", "b2"}


def test_a_rule_that_shares_nothing_with_the_mapping_is_skipped() -> None:
    routing = table(
        Rule(10, ("10.0.0.0/8",), ("farm", "site-a")), Rule(20, ("10.0.0.0/8",), ("backend", "b2"))
    )
    route = routing.route("only-b", "10.1.1.1")
    assert route.rule is not None and route.rule.priority == 20
    assert [b.name for b in route.candidates] == ["b2"]


def test_break_refuses_when_every_narrowed_backend_is_down() -> None:
    routing = table(Rule(10, ("10.1.0.0/16",), ("farm", "site-a"), "BREAK"))
    assert firsts(routing, "10.1.0.5", down={"a1"}) == {"a2"}
    with pytest.raises(NoRoute) as caught:
        routing.route("v", "10.1.0.5", {"a1", "a2"})
    assert caught.value.reply_code == constants.CONNECTION_FORCED == 320
    assert str(caught.value) == (
        "CONNECTION_FORCED - no backend available for vhost v: rule 10 (10.1.0.0/16 -> farm "
        "site-a, BREAK) found every backend down"
    )
    assert "matched client 10.1.0.5" in caught.value.detail
    # Disabled and drained count as down.
    disabled = attrs.evolve(routing, disabled={"a1", "a2"})
    with pytest.raises(NoRoute):
        disabled.route("v", "10.1.0.5")


def test_continue_tries_the_next_rule_then_the_whole_mapping() -> None:
    routing = table(
        Rule(10, ("10.1.0.0/16",), ("farm", "site-a")),
        Rule(20, ("10.0.0.0/8",), ("backend", "b1")),
    )
    assert firsts(routing, "10.1.0.5", down={"a1", "a2"}) == {"b1"}
    # The next rule's backend down too: the mapping's candidates, healthy ones first.
    assert firsts(routing, "10.1.0.5", down={"a1", "a2", "b1"}) == {"b2"}
    route = routing.route("v", "10.1.0.5", {"a1", "a2", "b1"})
    assert route.rule is None


def test_a_direct_mapping_is_narrowed_or_broken_too() -> None:
    routing = table(Rule(1, ("10.0.0.0/8",), ("farm", "other"), "BREAK"))
    assert [b.name for b in routing.route("direct", "10.0.0.1").candidates] == ["a1"]
    with pytest.raises(NoRoute):
        routing.route("direct", "10.0.0.1", {"a1"})
    # Without a rule a direct mapping ignores health (tried anyway).
    assert [b.name for b in routing.route("direct", "192.168.0.1", {"a1"}).candidates] == ["a1"]


def test_a_rule_whose_farm_was_deleted_narrows_nothing() -> None:
    routing = table(Rule(1, ("10.0.0.0/8",), ("farm", "gone"), "BREAK"))
    assert firsts(routing, "10.0.0.1") == set(NAMES)


def test_rules_are_configuration_and_compare_by_value() -> None:
    one = table(Rule(1, ("10.0.0.0/8",), ("farm", "site-a")))
    two = table(Rule(1, ("10.0.0.0/8",), ("farm", "site-a")))
    assert one == two
    assert one != table(Rule(1, ("10.0.0.0/8",), ("farm", "site-a"), "BREAK"))


def test_the_index_finds_every_rule_holding_an_address_in_priority_order() -> None:
    from amqprouter.routing.client_rules import RuleIndex

    rules = [
        Rule(1, ("10.0.0.0/8",), ("farm", "x")),
        Rule(2, ("10.1.0.0/16", "10.1.2.0/24"), ("farm", "x")),
        Rule(3, ("0.0.0.0/0",), ("farm", "x")),
        Rule(4, ("::/0",), ("farm", "x")),
        Rule(5, ("10.1.2.3/32",), ("farm", "x")),
    ]
    index = RuleIndex(rules)
    assert index.matching((4, 0x0A010203)) == [0, 1, 2, 4]  # rule 2 once, for two networks
    assert index.matching((4, 0xC0A80001)) == [2]
    assert index.matching((6, 1)) == [3]
