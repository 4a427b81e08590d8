"""HealthRegistry: passive marks and their expiry, fall/rise counting, what PRINT shows.

The registry's clock is injected (a number the test moves), so no test waits.
"""

from __future__ import annotations

import pytest
import structlog.testing
import trio
import trio.testing

from amqprouter.routing.health import HealthRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def downs() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def registry(clock: Clock, downs: list[tuple[str, str]]) -> HealthRegistry:
    return HealthRegistry(
        down_seconds=10.0, clock=clock, on_down=lambda name, reason: downs.append((name, reason))
    )


# --------------------------------------------------------------------------- #
# passive marks
# --------------------------------------------------------------------------- #


def test_nothing_known_costs_nothing(registry: HealthRegistry) -> None:
    assert registry.down() == frozenset()
    assert registry.get("a") is None
    assert registry.describe("a") == ""


def test_failed_connect_marks_down_for_down_seconds(
    registry: HealthRegistry, clock: Clock, downs: list[tuple[str, str]]
) -> None:
    registry.connect_failed("a", "127.0.0.1:5999: Connection refused")
    assert registry.down() == {"a"}
    assert downs == [("a", "connect failed: 127.0.0.1:5999: Connection refused")]
    state = registry.get("a")
    assert state is not None and state.since == 100.0 and state.until == 110.0
    clock.now = 106.0
    assert (
        registry.describe("a")
        == " DOWN (connect failed: 127.0.0.1:5999: Connection refused, 4.0s left)"
    )
    clock.now = 109.999
    assert registry.down() == {"a"}
    clock.now = 110.0
    assert registry.down() == frozenset()
    # Up and unchecked again: no entry, PRINT is the reference's line again.
    assert registry.get("a") is None
    assert registry.describe("a") == ""


def test_another_failed_connect_extends_the_mark_without_a_new_transition(
    registry: HealthRegistry, clock: Clock, downs: list[tuple[str, str]]
) -> None:
    registry.connect_failed("a", "first")
    clock.now = 108.0
    registry.connect_failed("a", "second")
    clock.now = 115.0
    assert registry.down() == {"a"}
    assert registry.describe("a") == " DOWN (connect failed: second, 3.0s left)"
    assert len(downs) == 1
    clock.now = 118.0
    assert registry.down() == frozenset()


def test_successful_connect_lifts_a_mark_at_once(registry: HealthRegistry) -> None:
    registry.connect_succeeded("a")  # nothing to lift
    registry.connect_failed("a", "refused")
    with structlog.testing.capture_logs() as logs:
        registry.connect_succeeded("a")
    assert registry.down() == frozenset()
    assert [(e["event"], e["log_level"], e["reason"]) for e in logs] == [
        ("backend up", "info", "a connection succeeded")
    ]


def test_a_new_down_after_an_up_is_a_new_transition(
    registry: HealthRegistry, downs: list[tuple[str, str]]
) -> None:
    registry.connect_failed("a", "one")
    registry.connect_succeeded("a")
    registry.connect_failed("a", "two")
    assert [reason for _, reason in downs] == ["connect failed: one", "connect failed: two"]


def test_down_is_logged_as_a_warning_with_the_reason(registry: HealthRegistry) -> None:
    with structlog.testing.capture_logs() as logs:
        registry.connect_failed("a", "refused")
    assert logs == [
        {
            "event": "backend down",
            "log_level": "warning",
            "backend": "a",
            "reason": "connect failed: refused",
            "passive": True,
        }
    ]


# --------------------------------------------------------------------------- #
# active checks
# --------------------------------------------------------------------------- #


def test_fall_failures_in_a_row_mark_down(
    registry: HealthRegistry, downs: list[tuple[str, str]]
) -> None:
    registry.start_checking("a", fall=3, rise=2)
    assert registry.describe("a") == " UP"
    registry.check_failed("a", "connect refused 127.0.0.1:5999")
    registry.check_failed("a", "connect refused 127.0.0.1:5999")
    registry.check_passed("a")  # breaks the run
    registry.check_failed("a", "connect refused 127.0.0.1:5999")
    registry.check_failed("a", "connect refused 127.0.0.1:5999")
    assert registry.down() == frozenset()
    registry.check_failed("a", "connect refused 127.0.0.1:5999")
    assert registry.down() == {"a"}
    assert downs == [("a", "connect refused 127.0.0.1:5999")]
    assert registry.describe("a") == " DOWN (connect refused 127.0.0.1:5999, 3 checks)"
    registry.check_failed("a", "no Connection.Start")
    assert registry.describe("a") == " DOWN (no Connection.Start, 4 checks)"
    assert len(downs) == 1


def test_rise_passes_in_a_row_mark_up(registry: HealthRegistry, clock: Clock) -> None:
    registry.start_checking("a", fall=1, rise=2)
    registry.check_failed("a", "refused")
    registry.check_passed("a")
    registry.check_failed("a", "refused")  # breaks the run
    registry.check_passed("a")
    clock.now = 1000.0  # a check's mark never expires by itself
    assert registry.down() == {"a"}
    registry.check_passed("a")
    assert registry.down() == frozenset()
    assert registry.describe("a") == " UP"
    # After going up it takes `fall` failures again (here 1).
    registry.check_failed("a", "refused")
    assert registry.down() == {"a"}
    assert registry.describe("a") == " DOWN (refused, 1 check)"


def test_checks_take_over_a_passive_mark(registry: HealthRegistry, clock: Clock) -> None:
    registry.start_checking("a", fall=2, rise=2)
    registry.connect_failed("a", "refused")
    registry.check_failed("a", "probe refused")
    registry.check_failed("a", "probe refused")
    clock.now = 200.0  # the passive mark would have expired: the checks hold it now
    assert registry.down() == {"a"}
    assert registry.describe("a") == " DOWN (probe refused, 2 checks)"


def test_passing_checks_lift_a_passive_mark_before_it_expires(registry: HealthRegistry) -> None:
    registry.start_checking("a", fall=3, rise=2)
    registry.connect_failed("a", "refused")
    registry.check_passed("a")
    assert registry.down() == {"a"}
    registry.check_passed("a")
    assert registry.down() == frozenset()


def test_a_successful_connect_lifts_a_check_mark_and_fall_counts_again(
    registry: HealthRegistry,
) -> None:
    registry.start_checking("a", fall=2, rise=2)
    registry.check_failed("a", "x")
    registry.check_failed("a", "x")
    registry.connect_succeeded("a")
    registry.check_failed("a", "x")
    assert registry.down() == frozenset()
    registry.check_failed("a", "x")
    assert registry.down() == {"a"}


def test_stopping_checks_lifts_their_mark_but_not_a_passive_one(
    registry: HealthRegistry,
) -> None:
    registry.start_checking("a", fall=1, rise=1)
    registry.check_failed("a", "x")
    registry.stop_checking("a")
    assert registry.down() == frozenset()
    assert registry.get("a") is None
    registry.start_checking("b", fall=1, rise=1)
    registry.connect_failed("b", "refused")
    registry.stop_checking("b")
    assert registry.down() == {"b"}


def test_results_for_unchecked_backends_are_ignored(registry: HealthRegistry) -> None:
    registry.check_failed("a", "x")
    registry.check_passed("a")
    assert registry.get("a") is None


def test_forget(registry: HealthRegistry) -> None:
    registry.connect_failed("a", "x")
    registry.forget("a")
    assert registry.down() == frozenset()


async def test_the_default_clock_is_trios_so_down_time_runs_on_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = HealthRegistry(down_seconds=10.0)
    registry.connect_failed("a", "refused")
    await trio.sleep(9.99)
    assert registry.down() == {"a"}
    await trio.sleep(0.02)
    assert registry.down() == frozenset()
