"""Which vhosts are paused, and which the router has seen (VHOST PAUSE/UNPAUSE/PRINT).

Runtime state, not configuration: it is not in the routing snapshot, CONFIG PRINT
does not write it, and a restart forgets it (as in amqpprox).
"""

from __future__ import annotations


class VhostStates:
    """The paused vhosts, and every vhost a client has asked for since start."""

    def __init__(self) -> None:
        self.paused: set[str] = set()
        self.seen: set[str] = set()

    def opened(self, vhost: str) -> bool:
        """A client asked for ``vhost`` in Connection.Open: True if it must be held."""
        self.seen.add(vhost)
        return vhost in self.paused

    def print_text(self) -> str:
        """VHOST PRINT: every vhost seen or paused, sorted, ``<vhost> = PAUSED|UNPAUSED``."""
        return "".join(
            f"{vhost} = {'PAUSED' if vhost in self.paused else 'UNPAUSED'}\n"
            for vhost in sorted(self.seen | self.paused)
        )
