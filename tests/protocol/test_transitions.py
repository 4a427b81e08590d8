"""The handshake tables are complete: the code is driven from them."""

from __future__ import annotations

from typing import Any

import pytest

from amqprouter.protocol import (
    BrokerState,
    ClientState,
    broker_handshake,
    client_handshake,
    constants,
)
from amqprouter.protocol.machine import HandshakeMachine

MACHINES: list[tuple[Any, dict[Any, Any], set[Any]]] = [
    (
        client_handshake.ClientHandshake,
        dict(client_handshake._TRANSITIONS),
        {ClientState.AWAITING_HEADER, ClientState.OPENED, ClientState.CLOSED},
    ),
    (
        broker_handshake.BrokerHandshake,
        dict(broker_handshake._TRANSITIONS),
        {BrokerState.OPENED, BrokerState.CLOSED},
    ),
]


@pytest.mark.parametrize(("machine", "table", "not_frame_driven"), MACHINES)
def test_every_frame_reading_state_has_a_complete_row(
    machine: Any, table: dict[Any, Any], not_frame_driven: set[Any]
) -> None:
    assert issubclass(machine, HandshakeMachine)
    states = set(type(next(iter(table))).__members__.values())
    # Every state that reads frames has a row; the others (final, or the client's
    # protocol header, read byte-wise) have none.
    assert set(table) == states - not_frame_driven
    for row in table.values():
        # Connection.Close is accepted everywhere and ends the machine.
        assert row[constants.CONNECTION_CLOSE].then.name == "CLOSED"
        for transition in row.values():
            assert transition.then in states
    # The success path runs from the first frame-reading state through every other
    # one to OPENED, one method per state.
    targets = {transition.then for row in table.values() for transition in row.values()}
    [state] = [state for state in table if state not in targets]
    seen = []
    while state in table:
        seen.append(state)
        [forward] = [t for t in table[state].values() if t.then.name not in ("CLOSED",)]
        state = forward.then
    assert state.name == "OPENED"
    assert set(seen) == set(table)
