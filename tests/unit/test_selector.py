"""A worker's selector over real shared tables: choices, reports and what they log."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest

from prefork_lb import shared
from prefork_lb.config import Backend, HealthCheck, Settings, parse_backend_url
from prefork_lb.errors import NoBackendAvailable
from prefork_lb.runtime import AdminState, Change
from prefork_lb.selector import Selector
from prefork_lb.shared import handover


def _backend(i: int, **options: object) -> Backend:
    return replace(parse_backend_url("test", f"http://10.0.0.{i}:80"), **options)  # type: ignore[arg-type]


@pytest.fixture
def state() -> Iterator[shared.SharedState]:
    settings = Settings(backends=(_backend(1), _backend(2), _backend(3)))
    installed = shared.install(settings)
    yield installed
    installed.close()
    handover._installed = None


def _selector(state: shared.SharedState, **settings: object) -> Selector:
    return Selector(replace(state.settings, **settings), state, slot=0)  # type: ignore[arg-type]


def test_choices_follow_the_shared_rotation(state: shared.SharedState) -> None:
    """Two selectors (two workers) drawing in turn still visit the backends in order."""
    first, second = _selector(state), _selector(state)
    picks = [(first if n % 2 else second).choose() for n in range(6)]
    assert picks == [0, 1, 2, 0, 1, 2]


def test_a_failure_seen_by_one_worker_steers_the_other(
    state: shared.SharedState, caplog: pytest.LogCaptureFixture
) -> None:
    """Once one worker marks a backend down, another worker stops choosing it."""
    one, other = _selector(state), _selector(state)
    with caplog.at_level(logging.WARNING, logger="gunicorn.error.prefork_lb"):
        one.request_failed(1, "connection refused")
    assert Counter(other.choose() for _ in range(10)) == {0: 5, 2: 5}
    assert [r.getMessage() for r in caplog.records] == [
        "backend http://10.0.0.2:80 down: 1 failure in 10 s (connection refused)"
    ]


def test_the_transition_is_logged_by_one_process_only(
    state: shared.SharedState, caplog: pytest.LogCaptureFixture
) -> None:
    """When two workers see the same failure, only the one that changed the state logs it."""
    one, other = _selector(state), _selector(state)
    with caplog.at_level(logging.INFO, logger="gunicorn.error.prefork_lb"):
        one.request_failed(0, "connection refused")
        other.request_failed(0, "connection refused")
    assert len([r for r in caplog.records if "down:" in r.getMessage()]) == 1


def test_everything_down_raises_503(state: shared.SharedState) -> None:
    """With every backend down, choose() raises NoBackendAvailable (503)."""
    selector = _selector(state)
    for index in range(3):
        selector.request_failed(index, "connection refused")
    with pytest.raises(NoBackendAvailable):
        selector.choose()
    assert _selector(state, fail_open=True).choose() in (0, 1, 2)


def test_checks_bring_a_backend_back(state: shared.SharedState) -> None:
    """With active checks a down backend returns after `rise` passed checks."""
    checked = HealthCheck(enabled=True, rise=2, fall=1)
    settings = replace(
        state.settings,
        backends=tuple(replace(b, check=checked) for b in state.settings.backends),
    )
    selector = Selector(settings, state, slot=0)
    selector.check_done(2, passed=False, reason="status 500")
    assert 2 not in {selector.choose() for _ in range(6)}
    selector.check_done(2, passed=True, reason="status 200")
    assert 2 not in {selector.choose() for _ in range(6)}
    selector.check_done(2, passed=True, reason="status 200")
    assert 2 in {selector.choose() for _ in range(6)}
    assert selector.health()[2].up


def test_in_flight_counts_follow_started_and_finished(state: shared.SharedState) -> None:
    """started() and finished() move this worker's in-flight count, seen by least_conn."""
    selector = _selector(state, policy="least_conn")
    selector.started(0)
    selector.started(0)
    selector.started(1)
    assert state.in_flight.totals() == [2, 1, 0]
    assert selector.choose() == 2
    selector.finished(0)
    selector.finished(0)
    selector.finished(1)
    assert state.in_flight.totals() == [0, 0, 0]


def test_a_worker_without_a_slot_counts_nothing(state: shared.SharedState) -> None:
    """A worker the master had no slot for still serves, but its requests are not counted."""
    selector = Selector(state.settings, state, slot=None)
    selector.started(0)
    assert state.in_flight.totals() == [0, 0, 0]
    assert selector.choose() in (0, 1, 2)


def test_the_worker_slot_survives_fork(state: shared.SharedState) -> None:
    """The slot the master assigns just before a fork is the one the child sees."""
    slot = shared.assign_worker_slot()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if shared.worker_slot() == slot else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    shared.release_worker_slot(slot)


def test_a_drained_backend_gets_no_new_request(state: shared.SharedState) -> None:
    """Once one worker drains a backend, another worker never chooses it, nor fails open to it."""
    one, other = _selector(state, fail_open=True), _selector(state, fail_open=True)
    one.control(Change(1, state=AdminState.DRAIN))
    assert Counter(other.choose() for _ in range(10)) == {0: 5, 2: 5}
    one.request_failed(0, "refused")
    one.request_failed(2, "refused")
    assert {other.choose() for _ in range(10)} == {0, 2}


def test_every_backend_held_is_a_clear_503(state: shared.SharedState) -> None:
    """With every backend drained or in maintenance, choosing says so."""
    one = _selector(state)
    for index, held in enumerate((AdminState.DRAIN, AdminState.MAINT, AdminState.DRAIN)):
        one.control(Change(index, state=held))
    with pytest.raises(NoBackendAvailable, match="drained or in maintenance"):
        one.choose()


def test_ready_again_rejoins_the_rotation(state: shared.SharedState) -> None:
    """A backend set ready after a drain is chosen again in its turn."""
    one = _selector(state)
    one.control(Change(0, state=AdminState.DRAIN))
    one.control(Change(0, state=AdminState.READY))
    assert Counter(one.choose() for _ in range(9)) == {0: 3, 1: 3, 2: 3}


def test_a_weight_change_reshapes_the_schedule_in_every_worker(state: shared.SharedState) -> None:
    """A weight written by one worker is the weight another schedules with, at once."""
    one, other = _selector(state), _selector(state)
    other.choose()
    one.control(Change(0, weight=3))
    picks = [other.choose() for _ in range(5 * 4)]
    assert Counter(picks) == {0: 12, 1: 4, 2: 4}


def test_an_ejected_backend_is_skipped_until_its_time_is_over(state: shared.SharedState) -> None:
    """Three 502s in a row (from two workers) eject a backend; the others share its turns."""
    one, other = (
        _selector(state, eject_consecutive_5xx=3, eject_time=30.0),
        _selector(state, eject_consecutive_5xx=3, eject_time=30.0),
    )
    one.answered(1, 502)
    other.answered(1, 503)
    one.answered(1, 504)
    assert Counter(other.choose() for _ in range(10)) == {0: 5, 2: 5}
    assert other.health()[1].ejections == 1


def test_a_success_resets_the_run_for_every_worker(state: shared.SharedState) -> None:
    """A 200 seen by one worker breaks the run another worker was counting."""
    one, other = (
        _selector(state, eject_consecutive_5xx=2),
        _selector(state, eject_consecutive_5xx=2),
    )
    one.answered(0, 502)
    other.answered(0, 200)
    one.answered(0, 502)
    assert one.health()[0].ejections == 0
