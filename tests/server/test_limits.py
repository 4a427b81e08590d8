"""The LIMIT state (server/limits.py) on trio's MockClock: rate windows per vhost, the
DEFAULT as one limiter per vhost, the concurrent count, the counters and data budgets."""

from __future__ import annotations

import trio
import trio.testing

from amqprouter.protocol import constants
from amqprouter.server.limits import Limits, Refusal

RATE_LIMITED = Refusal(
    constants.RESOURCE_ERROR, "The connection for v, is limited by proxy.", "CONN_RATE"
)


async def test_conn_rate_per_vhost_in_one_second_windows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits()
    limits.set("CONN_RATE", "v", 2)
    assert [limits.admit(i, "v") for i in range(3)] == [None, None, RATE_LIMITED]
    assert limits.admit(10, "other") is None  # no limit there
    await trio.sleep(1.0)
    assert limits.admit(3, "v") is None
    assert limits.limited == {("v", "CONN_RATE"): 1}


async def test_default_is_one_limiter_per_vhost_and_a_vhost_limit_overrides_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits()
    limits.set("CONN_RATE", None, 1)
    limits.set("CONN_RATE", "big", 3)
    assert limits.admit(1, "a") is None
    assert limits.admit(2, "b") is None  # b has its own window of the default rate
    assert limits.admit(3, "a") is not None
    assert [limits.admit(i, "big") for i in (4, 5, 6)] == [None, None, None]
    assert limits.admit(7, "big") is not None
    # A new DEFAULT rebuilds the limiters derived from it, not a vhost's own.
    limits.set("CONN_RATE", None, 5)
    assert limits.admit(8, "a") is None
    assert limits.admit(9, "big") is not None


async def test_limit_zero_refuses_every_client(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits()
    limits.set("CONN_RATE", "v", 0)
    assert limits.admit(1, "v") is not None
    await trio.sleep(5)
    assert limits.admit(2, "v") is not None
    limits.disable("CONN_RATE", "v")
    assert limits.admit(3, "v") is None


async def test_alarm_only_counts_and_admits(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits()
    limits.set("CONN_RATE_ALARM", None, 1)
    assert [limits.admit(i, "v") for i in range(3)] == [None, None, None]
    assert limits.alarmed == {("v", "CONN_RATE_ALARM"): 2}
    assert not limits.limited


def test_connections_counts_admitted_sessions_until_released() -> None:
    limits = Limits(clock=lambda: 0.0)
    limits.set("CONNECTIONS", "v", 2)
    assert limits.admit(1, "v") is None
    assert limits.admit(2, "v") is None
    refusal = limits.admit(3, "v")
    assert refusal == Refusal(
        constants.RESOURCE_ERROR,
        "The connection for v, is limited by proxy: at most 2 concurrent connections.",
        "CONNECTIONS",
    )
    limits.release(3)  # never admitted: nothing changes
    assert limits.concurrent("v") == 2
    limits.release(1)
    assert limits.admit(4, "v") is None
    assert limits.limited == {("v", "CONNECTIONS"): 1}


def test_connections_refusal_comes_before_the_rate_windows() -> None:
    limits = Limits(clock=lambda: 0.0)
    limits.set("CONNECTIONS", "v", 1)
    limits.set("CONN_RATE", "v", 2)
    assert limits.admit(1, "v") is None
    assert limits.admit(2, "v") is not None  # refused by CONNECTIONS, not counted as a rate
    limits.release(1)
    assert limits.admit(3, "v") is None  # the rate window has room for its second client


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
