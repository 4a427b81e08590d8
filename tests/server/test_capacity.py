"""The capacity policy without sockets: caps, the session budget, who is shed, the
log lines of a stop, the descriptor reserve, the heap trim."""

from __future__ import annotations

import os
from typing import Any

import attrs
import pytest
import structlog
import trio
import trio.testing

from amqprouter.observe.prometheus import metrics_text
from amqprouter.observe.stats import StatsCollector
from amqprouter.server import capacity as capacity_module
from amqprouter.server.capacity import (
    Capacity,
    DescriptorReserve,
    derived_max_connections,
)
from amqprouter.session import End
from amqprouter.session.session import State


@attrs.define(eq=False)
class FakeSession:
    id: int
    listen_port: int
    state: State = State.HANDSHAKE
    vhost: str | None = None
    cut: str | None = None

    def disconnect(self, end: End, reason: str) -> bool:
        assert end is End.OPERATOR_FORCED
        if self.cut is not None:
            return False
        self.cut = reason
        return True


class FullReserve(DescriptorReserve):
    """A reserve that never lacks anything (no descriptors taken by the tests)."""

    def refill(self) -> bool:
        return True


class StarvedReserve(DescriptorReserve):
    """A reserve that cannot be refilled: the process is out of descriptors."""

    def refill(self) -> bool:
        return False


def _capacity(max_connections: int, reserve: DescriptorReserve | None = None) -> Capacity:
    return Capacity(max_connections, reserve=reserve or FullReserve(), trim=None)


def _open(capacity: Capacity, *sessions: FakeSession) -> None:
    for session in sessions:
        capacity.opened(session)


def test_the_default_cap_leaves_two_descriptors_a_session_and_headroom() -> None:
    assert derived_max_connections(1024) == (1024 - 128) // 2 == 448
    assert derived_max_connections(65536) == 32704
    assert derived_max_connections(100) == 1  # never 0: one client can always come in


def test_an_explicit_cap_wins_and_zero_derives_it() -> None:
    assert _capacity(5).max_connections == 5
    assert _capacity(0).max_connections == derived_max_connections(capacity_module.nofile_limit())


def test_the_oldest_handshaking_session_of_the_listener_is_shed() -> None:
    capacity = _capacity(3)
    forwarding = FakeSession(1, 5672, State.OPEN)
    connecting = FakeSession(2, 5672, State.CONNECTING)
    old, young = FakeSession(3, 5672), FakeSession(5, 5672)
    other_listener = FakeSession(4, 5671)
    _open(capacity, forwarding, connecting, old, other_listener, young)
    assert capacity.shed_oldest(5672)
    assert old.cut is not None and "shed" in old.cut
    assert young.cut is None and other_listener.cut is None
    assert forwarding.cut is None and connecting.cut is None
    assert capacity.shed_total == 1


def test_a_client_held_at_connection_open_is_not_shed() -> None:
    capacity = _capacity(1)
    held = FakeSession(1, 5672, State.HANDSHAKE, vhost="paused-vhost")
    _open(capacity, held)
    assert not capacity.shed_oldest(5672)
    assert held.cut is None


def test_a_session_past_its_handshake_is_never_shed() -> None:
    capacity = _capacity(2)
    sessions = [FakeSession(1, 5672), FakeSession(2, 5672)]
    _open(capacity, *sessions)
    for session in sessions:
        session.state = State.OPEN  # Connection.Open came after they were counted
    assert not capacity.shed_oldest(5672)
    assert not capacity.shed_oldest(None)
    assert all(session.cut is None for session in sessions)


def test_any_listener_sheds_when_the_process_needs_room() -> None:
    capacity = _capacity(10)
    tls, plain = FakeSession(7, 5671), FakeSession(8, 5672)
    _open(capacity, plain, tls)
    assert capacity.shed_oldest(None)
    assert tls.cut is not None and plain.cut is None  # the older one, whatever its listener


def test_closed_sessions_are_no_longer_counted_or_shed() -> None:
    capacity = _capacity(2)
    gone, staying = FakeSession(1, 5672), FakeSession(2, 5672)
    _open(capacity, gone, staying)
    assert capacity.live(5672) == capacity.total == 2
    capacity.closed(gone)
    assert capacity.live(5672) == capacity.total == 1
    assert capacity.shed_oldest(5672)
    assert gone.cut is None and staying.cut is not None


async def test_at_the_cap_a_silent_session_makes_room_for_the_next_accept() -> None:
    capacity = _capacity(2)
    gate = capacity.gate(5672)
    silent, forwarding = FakeSession(1, 5672), FakeSession(2, 5672, State.OPEN)
    _open(capacity, silent, forwarding)
    assert not gate.has_room()
    with structlog.testing.capture_logs() as logs, trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gate.room)
            await trio.testing.wait_all_tasks_blocked()
            assert silent.cut is not None  # shed; room() waits for its socket to close
            capacity.closed(silent)  # what the server does when the session's task ends
    assert gate.has_room()
    assert logs == []  # shedding made room: accepting never stopped


async def test_at_the_cap_with_nobody_to_shed_one_line_stops_and_one_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    capacity = _capacity(1)
    gate = capacity.gate(5672)
    forwarding = FakeSession(1, 5672, State.OPEN)
    _open(capacity, forwarding)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gate.room)
            # Several rechecks pass while it is stopped: still one line.
            await trio.sleep(3 * capacity_module.RECHECK_SECONDS)
            assert [line["event"] for line in logs] == [
                "listener at its connection cap; stopped accepting"
            ]
            capacity.closed(forwarding)
    assert forwarding.cut is None
    assert [line["event"] for line in logs] == [
        "listener at its connection cap; stopped accepting",
        "listener accepting again",
    ]


async def test_the_session_budget_binds_every_listener_together() -> None:
    capacity = _capacity(10)
    capacity.budget = 2
    a, b = FakeSession(1, 5671, State.OPEN), FakeSession(2, 5672)
    _open(capacity, a, b)
    gate = capacity.gate(5673)  # a third listener, itself below its cap
    assert not gate.has_room()
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gate.room)
            await trio.testing.wait_all_tasks_blocked()
            assert b.cut is not None and a.cut is None
            capacity.closed(b)


async def test_out_of_descriptors_sheds_first_then_stops_with_one_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    capacity = _capacity(10, StarvedReserve())
    gate = capacity.gate(5672)
    silent, forwarding = FakeSession(1, 5671), FakeSession(2, 5672, State.OPEN)
    _open(capacity, silent, forwarding)
    assert not gate.has_room()
    with structlog.testing.capture_logs() as logs:
        with trio.move_on_after(3 * capacity_module.RECHECK_SECONDS):
            await gate.room(short_of=os.strerror(24))
        assert silent.cut is not None and forwarding.cut is None
        events = [line["event"] for line in logs]
        assert events == ["listener out of file descriptors; stopped accepting"]
        gate.accepted()
        gate.accepted()
    assert [line["event"] for line in logs][1:] == ["listener accepting again"]


def test_the_reserve_holds_descriptors_and_gives_them_back() -> None:
    reserve = DescriptorReserve(3)
    try:
        assert reserve.refill() and reserve.held == 3
        fds = list(reserve._fds)
        for fd in fds:
            os.fstat(fd)
        reserve.release()
        assert reserve.held == 0
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)
    finally:
        reserve.release()


async def test_a_burst_of_closed_sessions_trims_the_heap_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capacity_module, "TRIM_DELAY", 0.05)
    trims: list[int] = []
    capacity = Capacity(10, reserve=FullReserve(), trim=lambda: trims.append(1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(capacity.run)
        for number in range(capacity_module.TRIM_AFTER_CLOSED * 2):
            session = FakeSession(number, 5672)
            capacity.opened(session)
            capacity.closed(session)
        await trio.sleep(0.5)
        assert trims == [1]  # after the burst, not once per closed session
        nursery.cancel_scope.cancel()


def test_glibc_malloc_trim_is_found_here() -> None:
    # The test machine runs glibc; elsewhere the lookup gives None and trimming is off.
    trim: Any = capacity_module._malloc_trim()
    assert trim is not None
    trim()


def test_metrics_count_shed_connections() -> None:
    page = metrics_text(StatsCollector({}, 1.0), listeners=1, shed=3)
    assert "\namqprouter_connections_shed_total 3\n" in page
