"""One lookup per key at a time: later callers for the same key share its result.

Both name lookups (backend addresses, MAPHOSTNAME's reverse lookups) would
otherwise send the same query once per connection during a burst.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

_V = TypeVar("_V")


@attrs.define
class _Flight(Generic[_V]):
    done: trio.Event = attrs.Factory(trio.Event)
    #: The lookup's value, once it returned one (a 1-tuple: the value may be None).
    result: tuple[_V] | None = None
    error: Exception | None = None


class SingleFlight(Generic[_V]):
    """Runs at most one ``lookup`` per key; the others wait for it and share its outcome."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[_V]] = {}

    def busy(self, key: str) -> bool:
        """Whether a lookup of ``key`` is under way."""
        return key in self._flights

    async def run(self, key: str, lookup: Callable[[], Awaitable[_V]]) -> _V:
        """``lookup()``'s value, or that of the lookup of ``key`` already under way.

        A waiter gets a copy of the leader's exception (one object raised in several
        tasks would collect all their tracebacks). If the leader is cancelled, one of
        the waiters takes over.
        """
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.result is not None:
                return flight.result[0]
            if flight.error is not None:
                raise copy.copy(flight.error)
        flight = self._flights[key] = _Flight()
        try:
            value = await lookup()
            flight.result = (value,)
            return value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()
