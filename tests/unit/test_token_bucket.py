"""Token-bucket arithmetic, with the clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.token_bucket import Bucket, check_rate, is_full, take, tokens_at


def test_a_new_bucket_is_full() -> None:
    """A key never seen has ``burst`` tokens."""
    assert tokens_at(None, rate=5, burst=3, now=100.0) == 3


def test_a_bucket_refills_at_rate_up_to_burst() -> None:
    """Tokens grow by ``rate`` a second and stop at ``burst``."""
    bucket = Bucket(0.0, 10.0)
    assert tokens_at(bucket, rate=4, burst=10, now=10.5) == 2.0
    assert tokens_at(bucket, rate=4, burst=10, now=100.0) == 10.0
    assert is_full(bucket, rate=4, burst=10, now=12.5)
    assert not is_full(bucket, rate=4, burst=10, now=12.0)


def test_take_spends_a_token_and_refuses_when_there_is_none() -> None:
    """A request takes a token while there is one; then it is refused and told how long to wait."""
    first = take(None, rate=2, burst=1, now=0.0)
    assert first.allowed
    assert first.bucket == Bucket(0.0, 0.0)
    second = take(first.bucket, rate=2, burst=1, now=0.25)
    assert not second.allowed
    assert second.retry_after == pytest.approx(0.25)
    third = take(second.bucket, rate=2, burst=1, now=0.5)
    assert third.allowed


def test_a_clock_going_back_takes_no_tokens_away() -> None:
    """An earlier ``now`` than the bucket's stamp counts as no time passing."""
    assert tokens_at(Bucket(1.0, 10.0), rate=1, burst=5, now=9.0) == 1.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (1, 0.5), (1, float("inf"))],
)
def test_a_bucket_needs_a_positive_rate_and_a_burst_of_one_or_more(
    rate: float, burst: float
) -> None:
    """check_rate refuses a rate that is not positive and finite, or a burst below 1."""
    with pytest.raises(ValueError, match=r"rate|burst"):
        check_rate(rate, burst)


@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(-0.2, 0.5), min_size=1, max_size=300),
)
def test_no_more_than_burst_plus_rate_times_elapsed_get_through(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Over any run of requests, even with clock readings out of order, at most
    ``burst + rate * elapsed`` are allowed."""
    bucket, now, latest, earliest, allowed = None, 0.0, -1e9, 1e9, 0
    for gap in gaps:
        now += gap  # a negative gap: a reading taken before the previous take's
        latest, earliest = max(latest, now), min(earliest, now)
        decision = take(bucket, rate=rate, burst=burst, now=now)
        bucket = decision.bucket
        allowed += decision.allowed
    assert allowed <= burst + rate * (latest - earliest) + 1e-9


def test_a_late_clock_reading_never_moves_the_stamp_back() -> None:
    """A ``now`` older than the bucket's stamp keeps the stamp: no refill is counted twice."""
    bucket = Bucket(0.0, 10.0)
    late = take(bucket, rate=1, burst=5, now=9.0)
    assert not late.allowed
    assert late.bucket.stamp == 10.0
    assert not take(late.bucket, rate=1, burst=5, now=10.5).allowed
    assert take(late.bucket, rate=1, burst=5, now=11.0).allowed
