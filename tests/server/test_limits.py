"""The LIMIT state (server/limits.py) on trio's MockClock: rate windows per vhost, the
DEFAULT as one limiter per vhost, the concurrent count, the counters and data budgets."""

from __future__ import annotations

import trio
import trio.testing

from amqprouter.protocol import constants
from amqprouter.server.limits import MAX_WINDOWS, Admitted, Limits, Refusal

ADMITTED = Admitted()
RATE_LIMITED = Refusal(
    constants.RESOURCE_ERROR, "The connection for v, is limited by proxy.", "CONN_RATE"
)


async def test_conn_rate_per_vhost_in_one_second_windows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits()
    limits.set("CONN_RATE", "v", 2)
    assert [limits.admit(i, "v") for i in range(3)] == [ADMITTED, ADMITTED, RATE_LIMITED]
    assert limits.admit(10, "other") == ADMITTED  # no limit there
    await trio.sleep(1.0)
    assert limits.admit(3, "v") == ADMITTED


async def test_default_is_one_limiter_per_vhost_and_a_vhost_limit_overrides_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits()
    limits.set("CONN_RATE", None, 1)
    limits.set("CONN_RATE", "big", 3)
    assert limits.admit(1, "a") == ADMITTED
    assert limits.admit(2, "b") == ADMITTED  # b has its own window of the default rate
    assert limits.admit(3, "a") != ADMITTED
    assert [limits.admit(i, "big") for i in (4, 5, 6)] == [ADMITTED] * 3
    assert limits.admit(7, "big") != ADMITTED
    # A new DEFAULT rebuilds the limiters derived from it, not a vhost's own.
    limits.set("CONN_RATE", None, 5)
    assert limits.admit(8, "a") == ADMITTED
    assert limits.admit(9, "big") != ADMITTED


async def test_limit_zero_refuses_every_client(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits()
    limits.set("CONN_RATE", "v", 0)
    assert limits.admit(1, "v") != ADMITTED
    await trio.sleep(5)
    assert limits.admit(2, "v") != ADMITTED
    limits.disable("CONN_RATE", "v")
    assert limits.admit(3, "v") == ADMITTED


async def test_alarm_only_counts_and_admits(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits()
    limits.set("CONN_RATE_ALARM", None, 1)
    assert [limits.admit(i, "v") for i in range(3)] == [
        ADMITTED,
        Admitted(alarmed=True),
        Admitted(alarmed=True),
    ]


def test_connections_counts_admitted_sessions_until_released() -> None:
    limits = Limits(clock=lambda: 0.0)
    limits.set("CONNECTIONS", "v", 2)
    assert limits.admit(1, "v") == ADMITTED
    assert limits.admit(2, "v") == ADMITTED
    refusal = limits.admit(3, "v")
    assert refusal == Refusal(
        constants.RESOURCE_ERROR,
        "The connection for v, is limited by proxy: at most 2 concurrent connections.",
        "CONNECTIONS",
    )
    limits.release(3)  # never admitted: nothing changes
    assert limits.concurrent("v") == 2
    limits.release(1)
    assert limits.admit(4, "v") == ADMITTED


def test_connections_refusal_comes_before_the_rate_windows() -> None:
    limits = Limits(clock=lambda: 0.0)
    limits.set("CONNECTIONS", "v", 1)
    limits.set("CONN_RATE", "v", 2)
    assert limits.admit(1, "v") == ADMITTED
    assert limits.admit(2, "v") != ADMITTED  # refused by CONNECTIONS, not counted as a rate
    limits.release(1)
    assert limits.admit(3, "v") == ADMITTED  # the rate window has room for its second client


def test_data_budget_is_the_vhost_value_else_the_default() -> None:
    limits = Limits(clock=lambda: 0.0)
    assert limits.data_budget(None) is None
    assert limits.data_budget("v") is None
    limits.set("DATA_RATE", None, 1000)
    limits.set("DATA_RATE_ALARM", "v", 50)
    default = limits.data_budget(None)
    assert default is not None and (default.limit, default.alarm) == (1000, None)
    budget = limits.data_budget("v")
    assert budget is not None and (budget.limit, budget.alarm) == (1000, 50)
    limits.disable("DATA_RATE", None)
    budget = limits.data_budget("v")
    assert budget is not None and (budget.limit, budget.alarm) == (None, 50)
    assert limits.data_budget("w") is None


async def test_rate_windows_of_many_vhost_names_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Clients choose vhost names: under a DEFAULT rate, each gets a window, and the
    # expired ones are swept once there are MAX_WINDOWS.
    limits = Limits()
    limits.set("CONN_RATE", None, 1)
    for n in range(MAX_WINDOWS):
        limits.admit(n, f"v{n}")
    assert limits.windows() == MAX_WINDOWS
    assert limits.admit(-1, "v0") != ADMITTED  # still in its window: not swept
    await trio.sleep(1.0)
    assert limits.admit(-2, "fresh") == ADMITTED
    assert limits.windows() == 1
