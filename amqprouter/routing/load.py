"""Live sessions per backend, for ``least-connections`` (and CONN's ``backend=``).

A session holds one count from the moment it is routed (on the first backend of its
list, so a burst of clients opening at once sees each other's choices, as HAProxy
counts a connection when it assigns the server), moves it if it lands on another
backend (failover), and gives it back when it ends (``model.Route``). Mutable and
shared by every snapshot (``RoutingTable.load``); one trio thread uses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class BackendLoad(Mapping[str, int]):
    """Backend name → live sessions routed to it (names with none are absent)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def get(self, name: str, default: int = 0) -> int:  # type: ignore[override]
        return self._counts.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def take(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def give_back(self, name: str) -> None:
        left = self._counts.get(name, 0) - 1
        if left > 0:
            self._counts[name] = left
        else:
            self._counts.pop(name, None)

    def __repr__(self) -> str:
        return f"BackendLoad({self._counts!r})"
