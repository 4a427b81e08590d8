"""The rate arithmetic of LIMIT (routing/rate_window.py), on explicit clock readings."""

from __future__ import annotations

from amqprouter.routing.rate_window import DataBudget, FixedWindow


def test_fixed_window_allows_the_limit_then_refuses_until_the_window_ends() -> None:
    window = FixedWindow(2)
    assert [window.allow(10.0), window.allow(10.1), window.allow(10.9)] == [True, True, False]
    assert window.allow(10.999) is False
    # The next window starts at the first request after this one expired.
    assert window.allow(11.0) is True
    assert window.allow(11.5) is True
    assert window.allow(11.9) is False
    assert window.allow(12.0) is True


def test_fixed_window_of_zero_refuses_everything() -> None:
    window = FixedWindow(0)
    assert not any(window.allow(t / 10) for t in range(30))


def test_a_refused_request_does_not_start_a_window() -> None:
    window = FixedWindow(1)
    assert window.allow(0.0)
    assert not window.allow(0.5)
    assert window.allow(1.0)  # 1 s after the window started, not after the refusal


def test_data_budget_waits_for_the_refill_once_spent() -> None:
    budget = DataBudget(limit=1000, alarm=None)
    assert budget.spend(400, 5.0) == (0.0, False)
    assert budget.spend(500, 5.2) == (0.0, False)
    # This read spends the rest (and 400 more: forwarded whole, the overshoot of one
    # read): the reader waits until the window started at 5.0 ends.
    wait, _ = budget.spend(500, 5.25)
    assert wait == 0.75
    # After the refill, a fresh window.
    assert budget.spend(999, 6.0) == (0.0, False)
    assert budget.spend(1, 6.5)[0] == 0.5


def test_data_budget_alarm_reports_once_per_window_and_never_waits() -> None:
    budget = DataBudget(limit=None, alarm=100)
    assert budget.spend(100, 0.0) == (0.0, False)  # at the quota is not over it
    assert budget.spend(1, 0.1) == (0.0, True)
    assert budget.spend(1000, 0.2) == (0.0, False)  # already reported in this window
    assert budget.alarmed
    assert budget.spend(101, 1.0) == (0.0, True)  # a new window reports again


def test_data_budget_with_both_limit_and_alarm() -> None:
    budget = DataBudget(limit=1000, alarm=10)
    assert budget.spend(2000, 0.0) == (1.0, True)
