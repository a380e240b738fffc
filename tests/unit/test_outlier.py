"""Outlier ejection's rules: runs of 5xx, back-off, the pool limit and early return."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.health import BackendHealth
from prefork_lb.outlier import (
    OutlierPolicy,
    after_checks_passed,
    ejected,
    is_error,
    may_eject,
    members_in_set,
    observe_status,
)
from prefork_lb.slots import SlotState

POLICY = OutlierPolicy(consecutive=3, base_time=10.0, max_time=25.0, max_percent=50)
PEERS = [[BackendHealth(), BackendHealth(), BackendHealth(), BackendHealth()]]


def _answers(row: BackendHealth, statuses: list[int], now: float = 100.0) -> BackendHealth:
    for status in statuses:
        row, _ = observe_status(row, status, POLICY, now, PEERS)
    return row


@pytest.mark.parametrize(
    ("status", "on_500", "counted"),
    [
        pytest.param(502, False, True, id="502"),
        pytest.param(503, False, True, id="503"),
        pytest.param(504, False, True, id="504"),
        pytest.param(500, False, False, id="500-off"),
        pytest.param(500, True, True, id="500-on"),
        pytest.param(501, True, False, id="501"),
        pytest.param(200, True, False, id="200"),
        pytest.param(404, True, False, id="404"),
    ],
)
def test_which_statuses_count(status: int, on_500: bool, counted: bool) -> None:
    """502, 503 and 504 count; 500 only with eject_on_500; nothing else."""
    assert is_error(status, replace(POLICY, on_500=on_500)) is counted


def test_n_in_a_row_eject_and_a_success_breaks_the_run() -> None:
    """Three 5xx in a row eject; a success between them starts the count again."""
    broken = _answers(BackendHealth(), [502, 503, 200, 504, 502])
    assert (broken.run_5xx, ejected(broken, 100.0)) == (2, False)
    row, message = observe_status(broken, 503, POLICY, 100.0, PEERS)
    assert ejected(row, 100.0)
    assert row.ejected_until == 110.0
    assert message == "ejected for 10 s: 3 answers 5xx in a row (ejection 1)"


def test_checks_passed_before_the_ejection_do_not_end_it() -> None:
    """An ejection starts its count of passed checks from zero."""
    row = _answers(BackendHealth(successes=40), [502, 502, 502])
    assert row.successes == 0
    assert after_checks_passed(row, 2, 100.0) == (row, False)


def test_each_ejection_lasts_longer_up_to_the_maximum() -> None:
    """The n-th ejection lasts n times eject_time, capped at eject_max_time."""
    row, now, lengths = BackendHealth(), 0.0, []
    for _ in range(4):
        row = _answers(row, [502, 502, 502], now)
        lengths.append(row.ejected_until - now)
        now = row.ejected_until
    assert lengths == [10.0, 20.0, 25.0, 25.0]
    assert not ejected(row, row.ejected_until)


def test_the_pool_limit_keeps_a_backend_in() -> None:
    """With half a pool already ejected, a further backend stays in, its run kept."""
    out = BackendHealth(ejected_until=200.0)
    pools = [[out, out, BackendHealth(), BackendHealth()]]
    row = BackendHealth()
    for _ in range(3):
        row, message = observe_status(row, 502, POLICY, 100.0, pools)
    assert (ejected(row, 100.0), message, row.run_5xx) == (False, None, 3)


@given(
    pool_size=st.integers(min_value=1, max_value=20),
    already=st.integers(min_value=0, max_value=20),
    percent=st.integers(min_value=0, max_value=100),
)
def test_never_more_than_max_percent_is_ejected(pool_size: int, already: int, percent: int) -> None:
    """Whatever the pool, ejecting one more never takes it beyond max_percent."""
    already = min(already, pool_size)
    rows = [BackendHealth(ejected_until=50.0)] * already + [BackendHealth()] * (pool_size - already)
    if may_eject(rows, 10.0, percent):
        assert (already + 1) * 100 <= percent * pool_size


def test_passed_checks_end_an_ejection_early() -> None:
    """With active checks, rise passes in a row end the ejection before its time."""
    row = BackendHealth(ejected_until=500.0, ejections=1, successes=1)
    assert after_checks_passed(row, 2, 100.0) == (row, False)
    back, ended = after_checks_passed(replace(row, successes=2), 2, 100.0)
    assert ended
    assert not ejected(back, 100.0)
    assert back.ejections == 1


def test_only_members_in_the_set_count_towards_the_pool_limit() -> None:
    """Empty and draining DNS slots are no members: with 2 addresses in 4 slots, 50% is one."""
    out = BackendHealth(ejected_until=200.0)
    rows = [out, BackendHealth(), BackendHealth(), BackendHealth(), BackendHealth()]
    states = [
        SlotState.ACTIVE,  # a listed backend, or an address DNS gives: ejected already
        SlotState.ACTIVE,
        SlotState.EMPTY,
        SlotState.DRAINING,
        SlotState.EMPTY,
    ]
    members = members_in_set(range(5), rows, states)
    assert members == [out, rows[1]]
    row = BackendHealth()
    for _ in range(3):
        row, message = observe_status(row, 502, POLICY, 100.0, [members])
    assert (ejected(row, 100.0), message) == (False, None)
    assert members_in_set(range(5), rows, None) == rows
