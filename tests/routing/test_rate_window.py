"""The rate arithmetic of LIMIT (routing/rate_window.py), on explicit clock readings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (loads the hypothesis profile)
from amqprouter.routing.rate_window import DataBudget, FixedWindow
from amqprouter.server.limits import Limits

#: The session's socket read size (net.sockets.READ_SIZE): the pump's cap per read.
READ_SIZE = 256 * 1024


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
    assert budget.burst == 100  # a tenth of a second of the rate, the bucket full at first
    assert budget.allowance(5.0, READ_SIZE) == 100
    assert budget.spend(40, 5.0) == (0.0, False)
    assert budget.allowance(5.0, READ_SIZE) == 60
    # 10 ms later the bucket has 10 more; this read empties it: wait until it is full.
    assert budget.allowance(5.01, READ_SIZE) == 70
    wait, _ = budget.spend(70, 5.01)
    assert wait == pytest.approx(0.1)
    assert budget.allowance(5.01 + wait, READ_SIZE) == 100
    # A read sized before the limit was set leaves a debt, paid back at the rate.
    budget = DataBudget(limit=1000, alarm=None)
    assert budget.spend(2000, 0.0)[0] == pytest.approx(2.0)
    assert budget.allowance(2.0, READ_SIZE) == 100
    # Idle time does not grow the bucket past its size.
    assert budget.allowance(60.0, READ_SIZE) == 100


def test_data_budget_allowance_is_at_least_one_byte_and_at_most_the_cap() -> None:
    tiny = DataBudget(limit=5, alarm=None)
    assert tiny.burst == 1 and tiny.allowance(0.0, READ_SIZE) == 1
    assert DataBudget(limit=10**9, alarm=None).allowance(0.0, 4096) == 4096
    assert DataBudget(limit=None, alarm=10).allowance(0.0, 4096) == 4096


def _greedy_reader(budget: DataBudget, seconds: float) -> list[tuple[float, int]]:
    """What the session's pump reads from a client that always has bytes waiting, on
    a fake clock: each read sized by ``allowance``, each wait ``spend`` asks for kept
    to the microsecond the clock reads. Returns (time, bytes) per read."""
    now, reads = 0.0, []
    while now < seconds:
        size = budget.allowance(now, READ_SIZE)
        reads.append((now, size))
        wait, _ = budget.spend(size, now)
        now += max(wait, 1e-6)  # a read takes some time, however little
    return reads


def _most_in_any_span(reads: list[tuple[float, int]], span: float) -> int:
    """The most bytes read in any closed span of ``span`` seconds (the worst span
    starts at a read)."""
    most = 0
    for i, (start, _) in enumerate(reads):
        most = max(most, sum(size for t, size in reads[i:] if t <= start + span))
    return most


@pytest.mark.parametrize("rate", [5_000_000, 1_000_000, 1000, 7])
def test_no_second_passes_more_than_the_rate_and_one_bucket(rate: int) -> None:
    budget = DataBudget(limit=rate, alarm=None)
    assert budget.burst == max(1, rate // 10)  # a tenth of a second of the rate
    reads = _greedy_reader(budget, 5.0)
    # The first second, and any second after it: the rate and the bucket it started
    # with (a tenth of the rate); never the two quotas of one-second windows (at
    # 5 MB/s, 10 MB passed in the first 1.02 s).
    first = sum(size for t, size in reads if t <= 1.0)
    assert first <= rate + budget.burst
    assert _most_in_any_span(reads, 1.0) <= rate + budget.burst
    assert sum(size for t, size in reads if t <= 1.02) <= rate * 1.02 + budget.burst
    # ...and the rate is served: the limit holds the client back, no more.
    assert sum(size for _, size in reads) >= rate * 4.9


def test_a_smaller_bucket_brings_the_first_second_to_the_rate() -> None:
    """--data-rate-burst 0.01: the first second passes at most 1.01 times the rate."""
    rate = 5_000_000
    budget = DataBudget(limit=rate, alarm=None, burst_seconds=0.01)
    assert budget.burst == rate // 100
    reads = _greedy_reader(budget, 3.0)
    assert sum(size for t, size in reads if t <= 1.0) <= rate * 1.01
    assert _most_in_any_span(reads, 1.0) <= rate * 1.01
    assert sum(size for _, size in reads) >= rate * 2.9


def test_limits_build_budgets_with_their_bucket_size() -> None:
    limits = Limits(clock=lambda: 0.0, burst_seconds=0.5)
    limits.set("DATA_RATE", None, 1000)
    budget = limits.data_budget("/")
    assert budget is not None and budget.burst == 500


@given(
    rate=st.integers(10, 10_000_000),
    sends=st.lists(st.tuples(st.floats(0, 2.0), st.floats(0.0, 0.5)), min_size=1, max_size=20),
)
def test_any_client_schedule_stays_within_rate_times_span_plus_one_bucket(
    rate: int, sends: list[tuple[float, float]]
) -> None:
    """A client sending a share of the rate after each gap, read as the pump reads:
    between any two reads, at most the rate times the time between them and one bucket
    pass."""
    budget = DataBudget(limit=rate, alarm=None)
    now, resume, reads = 0.0, 0.0, []
    for gap, share in sends:
        now = max(now + gap, resume)
        size = max(1, int(rate * share))
        while size:
            took = min(size, budget.allowance(now, READ_SIZE))
            reads.append((now, took))
            size -= took
            wait, _ = budget.spend(took, now)
            resume = now + wait
            now = max(now + 1e-6, resume)
    passed = [0]
    for _, size in reads:
        passed.append(passed[-1] + size)
    for i, (start, _) in enumerate(reads):
        for j in range(i, len(reads)):
            span = reads[j][0] - start
            assert passed[j + 1] - passed[i] <= rate * span + budget.burst + 1, (start, span)


def test_data_budget_alarm_reports_once_per_window_and_never_waits() -> None:
    budget = DataBudget(limit=None, alarm=100)
    assert budget.spend(100, 0.0) == (0.0, False)  # at the quota is not over it
    assert budget.spend(1, 0.1) == (0.0, True)
    assert budget.spend(1000, 0.2) == (0.0, False)  # already reported in this window
    assert budget.alarmed
    assert budget.spend(101, 1.0) == (0.0, True)  # a new window reports again


def test_data_budget_with_both_limit_and_alarm() -> None:
    budget = DataBudget(limit=1000, alarm=10)
    wait, crossed = budget.spend(2000, 0.0)
    assert wait == pytest.approx(2.0) and crossed
