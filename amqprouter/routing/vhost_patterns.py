"""Vhost patterns: ``MAP BACKEND 'tenant-*' b1``, ``MAP FARM '*.eu' f``.

A mapping whose vhost holds a ``*`` is a pattern; ``*`` matches any run of characters,
the empty run included, and every other character only itself (there is no ``?``, no
class, no escape: a vhost that really holds a ``*`` is matched by a pattern that has
one there, since ``*`` also matches itself). An exact mapping always wins over a
pattern; among patterns the most specific one wins:

1. the one with the most literal (non-``*``) characters;
2. then the one with fewer ``*``;
3. then the one mapped first (a pattern mapped again keeps its place).

``VhostPatterns.match`` only tries the patterns whose leading literal (the text before
their first ``*``) the vhost starts with: the patterns are filed by that prefix, per
prefix length, so finding them is one dict probe per distinct prefix length, however
many patterns there are. Those are tried in matching order; a pattern that is its
prefix and one trailing ``*`` (``tenant-*``, the common kind) needs no more test, the
others a compiled regular expression each. Answers are remembered per vhost: a router
sees the same vhosts again and again, so the common lookup is one dict probe. The
memory is per snapshot (a new table starts afresh) and bounded (``MEMO_SIZE``; cleared
when full, so a client trying endless vhost names costs a lookup each, never memory).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, Generic, TypeVar

WILDCARD: Final = "*"
#: Vhosts whose answer is remembered per snapshot, at most.
MEMO_SIZE: Final = 4096

T = TypeVar("T")


def is_pattern(vhost: str) -> bool:
    return WILDCARD in vhost


def specificity(pattern: str) -> tuple[int, int]:
    """The sort key of ``pattern`` among patterns (smaller first): literal characters,
    most first, then wildcards, fewest first."""
    wildcards = pattern.count(WILDCARD)
    return (-(len(pattern) - wildcards), wildcards)


def _regex(pattern: str) -> str:
    return ".*".join(re.escape(part) for part in pattern.split(WILDCARD))


class VhostPatterns(Generic[T]):
    """Patterns with their targets, in matching order; ``match`` finds a vhost's."""

    __slots__ = ("_by_prefix", "_memo", "_tests", "ordered")

    def __init__(self, patterns: Iterable[tuple[str, T]]) -> None:
        # sorted() is stable: patterns that tie keep the order they were mapped in.
        self.ordered: Sequence[tuple[str, T]] = tuple(
            sorted(patterns, key=lambda item: specificity(item[0]))
        )
        by_length: dict[int, dict[str, list[int]]] = {}
        tests: list[re.Pattern[str] | None] = []
        for index, (pattern, _target) in enumerate(self.ordered):
            prefix, _star, rest = pattern.partition(WILDCARD)
            by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append(index)
            # "prefix*" matches whatever starts with its prefix: no regex to run.
            tests.append(None if rest == "" else re.compile(_regex(pattern), re.DOTALL))
        self._by_prefix = tuple(
            (length, {prefix: tuple(ix) for prefix, ix in table.items()})
            for length, table in sorted(by_length.items())
        )
        self._tests = tuple(tests)
        self._memo: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.ordered)

    def match(self, vhost: str) -> tuple[str, T] | None:
        """The first pattern (in matching order) that matches all of ``vhost``, and its
        target; None when none does."""
        index = self._memo.get(vhost)
        if index is None:
            index = self._find(vhost)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[vhost] = index
        return None if index < 0 else self.ordered[index]

    def _find(self, vhost: str) -> int:
        candidates: list[int] = []
        size = len(vhost)
        for length, table in self._by_prefix:
            if length > size:
                break
            found = table.get(vhost[:length])
            if found is not None:
                candidates += found
        candidates.sort()
        tests = self._tests
        for index in candidates:
            test = tests[index]
            if test is None or test.fullmatch(vhost) is not None:
                return index
        return -1
