"""The vhost states behind VHOST PAUSE/UNPAUSE/PRINT."""

from __future__ import annotations

import pytest

from amqprouter.server import vhosts
from amqprouter.server.vhosts import VhostStates


def test_print_lists_seen_and_paused_vhosts_sorted() -> None:
    states = VhostStates()
    assert states.opened("b") is False
    states.paused.add("c")
    assert states.opened("c") is True
    assert states.opened("a") is False
    assert states.print_text() == "a = UNPAUSED\nb = UNPAUSED\nc = PAUSED\n"


def test_vhosts_seen_are_bounded_and_paused_ones_never_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vhosts, "MAX_SEEN", 3)
    states = VhostStates()
    states.paused.add("p")
    for name in ("v1", "v2", "v3", "v4", "v5"):
        states.opened(name)
    assert list(states.seen) == ["v3", "v4", "v5"]
    assert states.print_text() == "p = PAUSED\nv3 = UNPAUSED\nv4 = UNPAUSED\nv5 = UNPAUSED\n"
