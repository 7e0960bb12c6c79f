"""Budget periods (ISO week, calendar month, fixed lengths; all UTC) and budget state."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.budget import BudgetState, budget_state, period_bounds
from scheduler.core.model import Budget, OnExhausted, TeamUsage

WEEK = Budget(100.0, "week")
MONTH = Budget(100.0, "month")
DAY = 86_400.0


def ts(*args: int) -> float:
    """Epoch seconds of a UTC wall-clock time."""
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


# ---------------------------------------------------------------- ISO week


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        # 2024-01-01 is a Monday.
        (ts(2024, 1, 1, 0, 0, 0), (2024, 1, 1)),
        (ts(2024, 1, 3, 12, 30), (2024, 1, 1)),
        # Sunday 23:59 UTC still belongs to the week that began the previous Monday.
        (ts(2024, 1, 7, 23, 59), (2024, 1, 1)),
        (ts(2024, 1, 7, 23, 59, 59), (2024, 1, 1)),
        (ts(2024, 1, 8, 0, 0, 0), (2024, 1, 8)),
        # A week that spans New Year: ISO 2025-W01 begins on Monday 2024-12-30.
        (ts(2024, 12, 31, 8), (2024, 12, 30)),
        (ts(2025, 1, 5, 23, 59, 59), (2024, 12, 30)),
        # 2021-01-01 is a Friday, in the week of Monday 2020-12-28 (ISO 2020-W53).
        (ts(2021, 1, 1, 0, 0, 0), (2020, 12, 28)),
        # Leap day 2024-02-29 is a Thursday.
        (ts(2024, 2, 29, 18), (2024, 2, 26)),
        # Before the epoch: 1969-12-31 is a Wednesday.
        (ts(1969, 12, 31, 23), (1969, 12, 29)),
    ],
)
def test_week_starts_monday_utc(now: float, monday: tuple[int, int, int]) -> None:
    start, end = period_bounds(WEEK, now)
    assert start == ts(*monday)
    assert end == start + 7 * DAY
    assert start <= now < end


def test_week_boundary_is_exact() -> None:
    monday = ts(2024, 3, 4)
    assert period_bounds(WEEK, monday - 0.001) == (ts(2024, 2, 26), monday)
    assert period_bounds(WEEK, monday) == (monday, ts(2024, 3, 11))


def test_week_is_utc_not_local_time() -> None:
    # Sunday 23:30 UTC is already Monday in Tokyo; the budget week has not turned yet.
    start, end = period_bounds(WEEK, ts(2024, 6, 9, 23, 30))
    assert start == ts(2024, 6, 3)
    assert end == ts(2024, 6, 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-86_400 * 365, max_value=4_102_444_800))  # 1969 .. 2100
def test_week_contains_now_and_starts_on_monday_midnight(now: int) -> None:
    start, end = period_bounds(WEEK, now)
    assert start <= now < end
    assert end - start == 7 * DAY
    first = dt.datetime.fromtimestamp(start, dt.UTC)
    assert first.weekday() == 0
    assert (first.hour, first.minute, first.second, first.microsecond) == (0, 0, 0, 0)
    assert first.isocalendar().weekday == 1


# ---------------------------------------------------------------- calendar month


@pytest.mark.parametrize(
    ("now", "first", "next_first"),
    [
        (ts(2024, 1, 1), (2024, 1, 1), (2024, 2, 1)),
        (ts(2024, 1, 31, 23, 59, 59), (2024, 1, 1), (2024, 2, 1)),
        (ts(2024, 4, 15, 12), (2024, 4, 1), (2024, 5, 1)),
        # December rolls over into January of the next year.
        (ts(2023, 12, 15, 9), (2023, 12, 1), (2024, 1, 1)),
        (ts(2023, 12, 31, 23, 59, 59), (2023, 12, 1), (2024, 1, 1)),
        (ts(2024, 1, 1, 0, 0, 0), (2024, 1, 1), (2024, 2, 1)),
        # February in a leap year has 29 days, in other years 28.
        (ts(2024, 2, 29, 23, 59, 59), (2024, 2, 1), (2024, 3, 1)),
        (ts(2024, 3, 1, 0, 0, 0), (2024, 3, 1), (2024, 4, 1)),
        (ts(2023, 2, 28, 12), (2023, 2, 1), (2023, 3, 1)),
    ],
)
def test_calendar_month_utc(
    now: float, first: tuple[int, int, int], next_first: tuple[int, int, int]
) -> None:
    assert period_bounds(MONTH, now) == (ts(*first), ts(*next_first))


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [(2024, 2, 29), (2023, 2, 28), (2000, 2, 29), (2100, 2, 28), (2024, 4, 30), (2024, 12, 31)],
)
def test_month_lengths(year: int, month: int, days: int) -> None:
    start, end = period_bounds(MONTH, ts(year, month, 10))
    assert end - start == days * DAY


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_month_contains_now_and_starts_on_the_first(now: int) -> None:
    start, end = period_bounds(MONTH, now)
    assert start <= now < end
    first = dt.datetime.fromtimestamp(start, dt.UTC)
    after = dt.datetime.fromtimestamp(end, dt.UTC)
    assert (first.day, first.hour, first.minute, first.second) == (1, 0, 0, 0)
    assert (after.day, after.hour, after.minute, after.second) == (1, 0, 0, 0)
    assert 28 * DAY <= end - start <= 31 * DAY
    # The next period begins exactly where this one ends.
    assert period_bounds(MONTH, end)[0] == end


# ---------------------------------------------------------------- fixed durations


def test_fixed_duration_from_the_epoch() -> None:
    b = Budget(10.0, "duration", period_seconds=30 * DAY)
    assert period_bounds(b, 0.0) == (0.0, 30 * DAY)
    assert period_bounds(b, 45 * DAY) == (30 * DAY, 60 * DAY)
    assert period_bounds(b, 60 * DAY) == (60 * DAY, 90 * DAY)


def test_fixed_duration_counted_from_an_anchor() -> None:
    anchor = ts(2024, 1, 3, 9)  # a Wednesday morning, not a calendar boundary
    b = Budget(10.0, "duration", period_seconds=14 * DAY, anchor_s=anchor)
    assert period_bounds(b, anchor) == (anchor, anchor + 14 * DAY)
    assert period_bounds(b, anchor + 14 * DAY - 1) == (anchor, anchor + 14 * DAY)
    assert period_bounds(b, anchor + 14 * DAY) == (anchor + 14 * DAY, anchor + 28 * DAY)
    assert period_bounds(b, ts(2024, 2, 20)) == (anchor + 42 * DAY, anchor + 56 * DAY)


def test_fixed_duration_before_its_anchor() -> None:
    anchor = ts(2024, 1, 1)
    b = Budget(10.0, "duration", period_seconds=7 * DAY, anchor_s=anchor)
    assert period_bounds(b, anchor - 1) == (anchor - 7 * DAY, anchor)
    assert period_bounds(b, anchor - 7 * DAY) == (anchor - 7 * DAY, anchor)
    assert period_bounds(b, anchor - 7 * DAY - 1) == (anchor - 14 * DAY, anchor - 7 * DAY)


def test_fixed_duration_that_is_not_whole_days() -> None:
    b = Budget(1.0, "duration", period_seconds=5_400.0, anchor_s=100.0)
    assert period_bounds(b, 100.0 + 3 * 5_400 + 7) == (100.0 + 3 * 5_400, 100.0 + 4 * 5_400)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(min_value=60, max_value=90 * 86_400),
    anchor=st.integers(min_value=0, max_value=2_000_000_000),
    offset=st.integers(min_value=-(10**9), max_value=10**9),
)
def test_fixed_duration_contains_now(length: int, anchor: int, offset: int) -> None:
    b = Budget(1.0, "duration", period_seconds=float(length), anchor_s=float(anchor))
    now = float(anchor + offset)
    start, end = period_bounds(b, now)
    assert start <= now < end
    assert end - start == length
    assert (start - anchor) % length == 0


# ---------------------------------------------------------------- budget_state


def test_budget_state_part_used() -> None:
    now = ts(2024, 5, 15, 10)  # a Wednesday
    state = budget_state(WEEK, TeamUsage(period_gpu_hours=40.0), now)
    assert state == BudgetState(100.0, 40.0, ts(2024, 5, 20))
    assert state.left_gpu_hours == 60.0
    assert state.exhausted is False


def test_budget_state_just_below_the_limit() -> None:
    state = budget_state(MONTH, TeamUsage(period_gpu_hours=99.999), ts(2024, 5, 15))
    assert state.exhausted is False
    assert state.left_gpu_hours == pytest.approx(0.001)


def test_budget_state_exactly_used_up() -> None:
    state = budget_state(MONTH, TeamUsage(period_gpu_hours=100.0), ts(2024, 12, 20))
    assert state.exhausted is True
    assert state.left_gpu_hours == 0.0
    assert state.resets_s == ts(2025, 1, 1)


def test_budget_state_overdrawn_shows_zero_left() -> None:
    state = budget_state(MONTH, TeamUsage(period_gpu_hours=130.0), ts(2024, 2, 10))
    assert state.exhausted is True
    assert state.left_gpu_hours == 0.0
    assert state.used_gpu_hours == 130.0
    assert state.resets_s == ts(2024, 3, 1)


def test_budget_state_of_a_zero_budget() -> None:
    # No GPU-hours to spend at all: such a team only ever runs as scavenger (or is held).
    state = budget_state(Budget(0.0, "week", OnExhausted.BLOCK), TeamUsage(), ts(2024, 5, 15))
    assert state.exhausted is True
    assert state.left_gpu_hours == 0.0


def test_budget_state_without_a_budget() -> None:
    state = budget_state(None, TeamUsage(decayed_gpu_seconds=1e9, period_gpu_hours=1e6), 0.0)
    assert state.limit_gpu_hours is None
    assert state.used_gpu_hours == 1e6
    assert state.left_gpu_hours is None
    assert state.exhausted is False
    assert state.resets_s is None


def test_budget_state_resets_at_the_end_of_a_fixed_period() -> None:
    anchor = ts(2024, 1, 1)
    b = Budget(500.0, "duration", period_seconds=30 * DAY, anchor_s=anchor)
    state = budget_state(b, TeamUsage(period_gpu_hours=125.5), anchor + 31 * DAY)
    assert state.resets_s == anchor + 60 * DAY
    assert state.left_gpu_hours == 374.5
    assert state.exhausted is False


def test_budget_state_ignores_decayed_history() -> None:
    # Budgets count this period's GPU-hours only; fair-share history is a separate matter.
    state = budget_state(WEEK, TeamUsage(decayed_gpu_seconds=1e12, period_gpu_hours=0.0), 0.0)
    assert state.exhausted is False
    assert state.left_gpu_hours == 100.0
