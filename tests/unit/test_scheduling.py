"""Selection policies and the retry rule: how health and positions become a backend."""

from __future__ import annotations

import itertools
from collections import Counter
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.errors import NoBackendAvailable
from prefork_lb.scheduling import (
    IDEMPOTENT,
    Candidate,
    Eligible,
    eligible,
    may_retry,
    pick_least_conn,
    pick_round_robin,
    smooth_schedule,
)

# The shared counter is a file offset: it never goes below 0 or above 2**63 - 1.
MAX_POSITION = 2**63 - 1


def _up(n: int, weights: list[int] | None = None) -> list[Candidate]:
    weights = weights or [1] * n
    return [Candidate(index=i, weight=w, backup=False, usable=True) for i, w in enumerate(weights)]


def _round_robin(candidates: list[Candidate], positions: range, **kwargs: bool) -> list[int]:
    choice = eligible(candidates, fail_open=kwargs.get("fail_open", False))
    return [pick_round_robin(choice, p) for p in positions]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        pytest.param((5, 1, 1), "aabacaa", id="nginx-5-1-1"),
        pytest.param((1, 1, 1), "abc", id="equal"),
        pytest.param((2, 2, 2), "abc", id="equal-reduced"),
        pytest.param((3, 1), "aaba", id="3-1"),
        pytest.param((1, 3), "babb", id="1-3"),
        pytest.param((7,), "a", id="single"),
    ],
)
def test_smooth_schedule(weights: tuple[int, ...], expected: str) -> None:
    """The schedule is nginx's smooth weighted round robin (5,1,1 gives a,a,b,a,c,a,a)."""
    assert "".join("abc"[i] for i in smooth_schedule(weights)) == expected


@pytest.mark.parametrize("weights", [(), (0, 1), (1, -1)], ids=["empty", "zero", "negative"])
def test_smooth_schedule_rejects_bad_weights(weights: tuple[int, ...]) -> None:
    """A schedule needs at least one weight, all positive."""
    with pytest.raises(ValueError, match="weights must be positive"):
        smooth_schedule(weights)


@given(
    weights=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=8),
    offset=st.integers(min_value=0, max_value=MAX_POSITION - 1000),
)
def test_every_window_matches_the_weights(weights: list[int], offset: int) -> None:
    """For every weight vector, every window of sum(weights) picks matches the weights exactly."""
    total = sum(weights)
    picks = Counter(_round_robin(_up(len(weights), weights), range(offset, offset + total)))
    assert picks == dict(enumerate(weights))


@given(
    n=st.integers(min_value=1, max_value=20),
    k=st.integers(min_value=1, max_value=10),
    offset=st.integers(min_value=0, max_value=MAX_POSITION - 200),
)
def test_each_backend_exactly_k_times(n: int, k: int, offset: int) -> None:
    """Over n*k consecutive positions from any offset, each of n backends is picked k times."""
    picks = Counter(_round_robin(_up(n), range(offset, offset + n * k)))
    assert picks == {i: k for i in range(n)}


@given(n=st.integers(min_value=1, max_value=20), offset=st.integers(0, MAX_POSITION - 41))
def test_equal_weights_cycle_in_order(n: int, offset: int) -> None:
    """With equal weights each position picks the backend after the previous pick, wrapping."""
    indexes = _round_robin(_up(n), range(offset, offset + 2 * n + 1))
    for before, after in itertools.pairwise(indexes):
        assert after == (before + 1) % n


@given(
    usable=st.lists(st.booleans(), min_size=2, max_size=10).filter(any),
    k=st.integers(min_value=1, max_value=5),
    offset=st.integers(min_value=0, max_value=MAX_POSITION - 100),
)
def test_down_backends_leave_the_rotation_even(usable: list[bool], k: int, offset: int) -> None:
    """While some backends are down, the others share the rotation exactly evenly."""
    candidates = [Candidate(i, 1, False, up) for i, up in enumerate(usable)]
    healthy = [i for i, up in enumerate(usable) if up]
    picks = Counter(_round_robin(candidates, range(offset, offset + k * len(healthy))))
    assert picks == dict.fromkeys(healthy, k)


def test_backups_only_when_every_primary_is_down() -> None:
    """Backups get no traffic while a primary is usable, and all of it once none is."""
    one_primary_up = [
        Candidate(0, 1, False, False),
        Candidate(1, 1, False, True),
        Candidate(2, 1, True, True),
    ]
    assert set(_round_robin(one_primary_up, range(10))) == {1}
    primaries_down = [
        Candidate(0, 1, False, False),
        Candidate(1, 1, False, False),
        Candidate(2, 1, True, True),
        Candidate(3, 1, True, True),
    ]
    assert Counter(_round_robin(primaries_down, range(10))) == {2: 5, 3: 5}


def test_everything_down_is_503() -> None:
    """When every backend is down the request gets 503 at once."""
    with pytest.raises(NoBackendAvailable) as caught:
        eligible([Candidate(0, 1, False, False), Candidate(1, 1, True, False)], fail_open=False)
    assert caught.value.status == HTTPStatus.SERVICE_UNAVAILABLE


def test_a_lone_backend_is_never_down() -> None:
    """As in nginx, a single backend gets the traffic even while marked down."""
    choice = eligible([Candidate(0, 1, False, False)], fail_open=False)
    assert choice.indexes == (0,)


def test_no_backends_is_503() -> None:
    """With no backends at all there is nothing to pick: 503."""
    with pytest.raises(NoBackendAvailable):
        eligible([], fail_open=True)


def test_fail_open_uses_every_primary() -> None:
    """In fail-open mode, when everything looks down, every primary is used again."""
    candidates = [
        Candidate(0, 1, False, False),
        Candidate(1, 2, False, False),
        Candidate(2, 1, True, False),
    ]
    choice = eligible(candidates, fail_open=True)
    assert choice == Eligible(indexes=(0, 1), weights=(1, 2), panic=True)


def test_fail_open_does_not_apply_while_something_is_up() -> None:
    """Fail-open changes nothing while one backend is usable."""
    candidates = [Candidate(0, 1, False, False), Candidate(1, 1, False, True)]
    assert eligible(candidates, fail_open=True) == Eligible(indexes=(1,), weights=(1,))


def test_exclude_skips_tried_backends() -> None:
    """A retry never goes back to a backend this request already tried."""
    choice = eligible(_up(3), exclude=frozenset({0, 2}), fail_open=False)
    assert choice.indexes == (1,)
    with pytest.raises(NoBackendAvailable, match="already tried"):
        eligible(_up(2), exclude=frozenset({0, 1}), fail_open=True)


def test_slow_start_scales_the_ramping_backend() -> None:
    """A backend a fifth of the way through its slow start gets a fifth of its share."""
    candidates = [
        Candidate(0, 1, False, True),
        Candidate(1, 1, False, True, share=0.2),
    ]
    choice = eligible(candidates, fail_open=False)
    assert choice.weights == (10, 2)
    picks = Counter(pick_round_robin(choice, p) for p in range(12))
    assert picks == {0: 10, 1: 2}


def test_slow_start_share_never_rounds_to_zero() -> None:
    """A backend that has just come back still gets a little traffic."""
    candidates = [Candidate(0, 3, False, True), Candidate(1, 1, False, True, share=0.0)]
    assert eligible(candidates, fail_open=False).weights == (30, 1)


@pytest.mark.parametrize(
    ("in_flight", "position", "expected"),
    [
        pytest.param([5, 0, 3], 0, 1, id="fewest"),
        pytest.param([2, 2, 2], 0, 0, id="tie-position-0"),
        pytest.param([2, 2, 2], 4, 1, id="tie-position-4"),
        pytest.param([1, 0, 0], 7, 2, id="tie-among-two"),
    ],
)
def test_least_conn(in_flight: list[int], position: int, expected: int) -> None:
    """Least connections picks the fewest in flight, ties going round robin by position."""
    choice = eligible(_up(3), fail_open=False)
    assert pick_least_conn(choice, in_flight, position) == expected


def test_least_conn_weighs_in_flight_by_weight() -> None:
    """A backend of weight 4 with 3 in flight is less loaded than one of weight 1 with 1."""
    choice = eligible(_up(2, [1, 4]), fail_open=False)
    assert pick_least_conn(choice, [1, 3], 0) == 1


def test_least_conn_ignores_down_backends() -> None:
    """An idle backend that is down is not picked, however idle."""
    candidates = [Candidate(0, 1, False, False), Candidate(1, 1, False, True)]
    choice = eligible(candidates, fail_open=False)
    assert pick_least_conn(choice, [0, 50], 0) == 1


@given(
    in_flight=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=10),
    position=st.integers(min_value=0, max_value=MAX_POSITION),
)
def test_least_conn_never_picks_a_busier_backend(in_flight: list[int], position: int) -> None:
    """Whatever the counts, no backend has fewer in flight than the one picked."""
    choice = eligible(_up(len(in_flight)), fail_open=False)
    assert in_flight[pick_least_conn(choice, in_flight, position)] == min(in_flight)


_RETRY = {"tries": 1, "retries": 2, "elapsed": 0.1, "budget": 10.0}


@pytest.mark.parametrize(
    ("method", "sent", "replayable", "expected"),
    [
        pytest.param("POST", False, False, True, id="post-not-sent"),
        pytest.param("PATCH", False, False, True, id="patch-not-sent"),
        pytest.param("POST", True, True, False, id="post-sent"),
        pytest.param("PATCH", True, True, False, id="patch-sent"),
        pytest.param("GET", True, True, True, id="get-sent"),
        pytest.param("PUT", True, True, True, id="put-sent-replayable"),
        pytest.param("PUT", True, False, False, id="put-sent-streamed"),
        pytest.param("DELETE", True, True, True, id="delete-sent"),
        pytest.param("LOCK", True, True, False, id="unknown-method-sent"),
    ],
)
def test_may_retry_by_method(method: str, sent: bool, replayable: bool, expected: bool) -> None:
    """Anything unsent may move on; sent requests only if idempotent with a replayable body."""
    assert (
        may_retry(method=method, request_sent=sent, body_replayable=replayable, **_RETRY)
        is expected
    )


def test_idempotent_methods() -> None:
    """The idempotent methods are RFC 9110's: GET, HEAD, OPTIONS, PUT, DELETE, TRACE."""
    assert frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}) == IDEMPOTENT


@pytest.mark.parametrize(
    ("tries", "elapsed", "expected"),
    [
        pytest.param(1, 0.0, True, id="first-failure"),
        pytest.param(2, 0.0, True, id="second-failure"),
        pytest.param(3, 0.0, False, id="budget-of-tries-spent"),
        pytest.param(1, 10.0, False, id="time-budget-spent"),
    ],
)
def test_may_retry_within_budget(tries: int, elapsed: float, expected: bool) -> None:
    """No more than `retries` extra tries, and none once the time budget is spent."""
    allowed = may_retry(
        method="GET",
        request_sent=False,
        body_replayable=True,
        tries=tries,
        retries=2,
        elapsed=elapsed,
        budget=10.0,
    )
    assert allowed is expected
