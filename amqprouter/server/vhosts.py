"""Which vhosts are paused, and which the router has seen (VHOST PAUSE/UNPAUSE/PRINT).

Runtime state, not configuration: it is not in the routing snapshot, CONFIG PRINT
does not write it, and a restart forgets it (as in amqpprox).
"""

from __future__ import annotations

from amqprouter.text import escape

#: VHOST PRINT remembers at most this many vhosts seen (paused ones always): a client
#: can name any vhost in Connection.Open, and the set must not grow without end.
MAX_SEEN = 10_000


class VhostStates:
    """The paused vhosts, and the vhosts clients have asked for since start."""

    def __init__(self) -> None:
        self.paused: set[str] = set()
        # Insertion-ordered, so the oldest is forgotten first when the bound is reached.
        self.seen: dict[str, None] = {}

    def opened(self, vhost: str) -> bool:
        """A client asked for ``vhost`` in Connection.Open: True if it must be held."""
        if vhost not in self.seen:
            if len(self.seen) >= MAX_SEEN:
                del self.seen[next(iter(self.seen))]
            self.seen[vhost] = None
        return vhost in self.paused

    def print_text(self) -> str:
        """VHOST PRINT: every vhost seen or paused, sorted, ``<vhost> = PAUSED|UNPAUSED``.

        A vhost is a client's choice, so it is escaped (``amqprouter.text``): a newline
        or a terminal escape in it cannot forge a line or colour the operator's screen.
        """
        return "".join(
            f"{escape(vhost)} = {'PAUSED' if vhost in self.paused else 'UNPAUSED'}\n"
            for vhost in sorted(self.paused.union(self.seen))
        )
