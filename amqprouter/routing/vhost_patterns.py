"""Vhost patterns: ``MAP BACKEND 'tenant-*' b1``, ``MAP FARM '*.eu' f``.

A mapping whose vhost holds a ``*`` is a pattern; ``*`` matches any run of characters,
the empty run included, and every other character only itself (there is no ``?``, no
class, no escape: a vhost that really holds a ``*`` is matched by a pattern that has
one there, since ``*`` also matches itself). An exact mapping always wins over a
pattern; among patterns the most specific one wins:

1. the one with the most literal (non-``*``) characters;
2. then the one with fewer ``*``;
3. then the one mapped first (a pattern mapped again keeps its place).

``VhostPatterns.match`` walks them in that order as one compiled regular expression
(one alternative per pattern, the first that matches the whole vhost wins, as the
list says), and remembers its answers per vhost: a router sees the same vhosts again
and again, so the common lookup is one dict probe. The memory is per snapshot (a new
table starts afresh) and bounded (``MEMO_SIZE``; cleared when full, so a client
trying endless vhost names costs a regex run each, never memory).
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

    __slots__ = ("_memo", "_regex", "ordered")

    def __init__(self, patterns: Iterable[tuple[str, T]]) -> None:
        # sorted() is stable: patterns that tie keep the order they were mapped in.
        self.ordered: Sequence[tuple[str, T]] = tuple(
            sorted(patterns, key=lambda item: specificity(item[0]))
        )
        self._regex = (
            re.compile("|".join(f"({_regex(p)})" for p, _t in self.ordered), re.DOTALL)
            if self.ordered
            else None
        )
        self._memo: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.ordered)

    def match(self, vhost: str) -> tuple[str, T] | None:
        """The first pattern (in matching order) that matches all of ``vhost``, and its
        target; None when none does."""
        index = self._memo.get(vhost)
        if index is None:
            found = self._regex.fullmatch(vhost) if self._regex is not None else None
            # Each alternative is one group and holds none: lastindex names the pattern.
            index = -1 if found is None or found.lastindex is None else found.lastindex - 1
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[vhost] = index
        return None if index < 0 else self.ordered[index]
