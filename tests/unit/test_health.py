"""The health state machine: passive failures, active checks, trials and slow start."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.health import BackendHealth, Event, HealthPolicy, Transition, observe, ramp

PASSIVE = HealthPolicy(max_fails=3, fail_timeout=10.0, active=False, rise=2, fall=3)
ACTIVE = HealthPolicy(max_fails=3, fail_timeout=10.0, active=True, rise=2, fall=3)


def _run(
    events: list[tuple[Event, float]], policy: HealthPolicy, health: BackendHealth | None = None
) -> tuple[BackendHealth, list[Transition]]:
    health = health or BackendHealth()
    transitions = []
    for event, now in events:
        health, transition = observe(health, event, policy, now, "connection refused")
        if transition is not None:
            transitions.append(transition)
    return health, transitions


def test_max_fails_within_fail_timeout_marks_down() -> None:
    """Three failed requests within ten seconds take the backend down, with the reason logged."""
    fail = Event.REQUEST_FAILED
    health, transitions = _run([(fail, 100.0), (fail, 104.0), (fail, 109.0)], PASSIVE)
    assert not health.up
    assert health.since == 109.0
    assert transitions == [
        Transition(up=False, message="down: 3 failures in 10 s (connection refused)")
    ]


def test_failures_spread_over_windows_do_not_mark_down() -> None:
    """Failures further apart than fail_timeout start a new count each time."""
    fail = Event.REQUEST_FAILED
    health, transitions = _run([(fail, 100.0), (fail, 105.0), (fail, 111.0)], PASSIVE)
    assert health.up
    assert health.window_fails == 1
    assert transitions == []


def test_max_fails_zero_never_marks_down() -> None:
    """With max_fails 0 failed requests never take a backend down."""
    policy = replace(PASSIVE, max_fails=0)
    health, transitions = _run([(Event.REQUEST_FAILED, float(t)) for t in range(50)], policy)
    assert health == BackendHealth()
    assert transitions == []


def test_failed_requests_do_not_count_towards_fall() -> None:
    """Failed requests and failed checks are counted apart: one failed check is not three."""
    policy = replace(ACTIVE, max_fails=0)
    events = [(Event.REQUEST_FAILED, 1.0), (Event.REQUEST_FAILED, 2.0), (Event.CHECK_FAILED, 3.0)]
    health, transitions = _run(events, policy)
    assert health.up
    assert health.failures == 1
    assert transitions == []


def test_max_fails_one_marks_down_at_the_first_failure() -> None:
    """nginx's default: one failure is enough."""
    policy = replace(PASSIVE, max_fails=1)
    health, transitions = _run([(Event.REQUEST_FAILED, 5.0)], policy)
    assert not health.up
    assert transitions[0].message == "down: 1 failure in 10 s (connection refused)"


def test_down_backend_goes_on_trial_after_fail_timeout() -> None:
    """Without active checks, a down backend is usable again once fail_timeout has passed."""
    health, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, PASSIVE)
    assert not health.usable(109.9)
    assert health.usable(110.0)


def test_one_request_takes_the_trial() -> None:
    """Once fail_timeout has passed one request takes the trial; the next finds none due."""
    down, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, PASSIVE)
    early, _ = observe(down, Event.TRIAL_TAKEN, PASSIVE, 109.0)
    assert early is down
    taken, _ = observe(down, Event.TRIAL_TAKEN, PASSIVE, 111.0)
    assert taken.trial_at == 111.0
    assert not taken.usable(111.0)
    assert not taken.usable(120.9)
    second, _ = observe(taken, Event.TRIAL_TAKEN, PASSIVE, 112.0)
    assert second is taken
    # A trial that never reports back (the client left) expires: another may be taken.
    assert taken.usable(121.0)


def test_trial_success_brings_it_up() -> None:
    """A request that succeeds on trial brings the backend up."""
    down, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, PASSIVE)
    events = [(Event.TRIAL_TAKEN, 110.5), (Event.REQUEST_SUCCEEDED, 111.0)]
    health, transitions = _run(events, PASSIVE, down)
    assert health.up
    assert health.since == 111.0
    assert health.trial_at == 0.0
    assert transitions == [
        Transition(up=True, message="up: a request succeeded on trial after 11 s down")
    ]


def test_trial_failure_keeps_it_down_for_another_fail_timeout() -> None:
    """A request that fails on trial takes the backend out for another fail_timeout."""
    down, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, PASSIVE)
    events = [(Event.TRIAL_TAKEN, 110.0), (Event.REQUEST_FAILED, 112.0)]
    health, transitions = _run(events, PASSIVE, down)
    assert not health.up
    assert health.since == 100.0
    assert health.reason == "failed again on trial (connection refused)"
    assert not health.usable(121.9)
    assert health.usable(122.0)
    assert transitions == []


def test_outcomes_of_requests_sent_before_the_fall_change_nothing() -> None:
    """Late answers from requests sent before the backend went down do not decide anything."""
    down, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, PASSIVE)
    for event in (Event.REQUEST_SUCCEEDED, Event.REQUEST_FAILED):
        health, transitions = _run([(event, 101.0)], PASSIVE, down)
        assert health == down
        assert transitions == []


def test_fall_failed_checks_mark_down() -> None:
    """Three failed checks in a row take the backend down."""
    health, transitions = _run([(Event.CHECK_FAILED, float(t)) for t in range(3)], ACTIVE)
    assert not health.up
    assert transitions == [
        Transition(up=False, message="down: 3 failed health checks in a row (connection refused)")
    ]


def test_a_passed_check_breaks_the_run_of_failures() -> None:
    """Failed checks only count in a row: a passed one starts the count again."""
    events = [Event.CHECK_FAILED, Event.CHECK_FAILED, Event.CHECK_PASSED, Event.CHECK_FAILED]
    health, transitions = _run([(e, float(t)) for t, e in enumerate(events)], ACTIVE)
    assert health.up
    assert health.failures == 1
    assert transitions == []


def test_rise_passed_checks_bring_it_back() -> None:
    """A down backend comes back after `rise` passed checks in a row, and not before."""
    down, _ = _run([(Event.CHECK_FAILED, 0.0)] * 3, ACTIVE)
    one, transitions = _run([(Event.CHECK_PASSED, 5.0)], ACTIVE, down)
    assert not one.up
    assert transitions == []
    two, transitions = _run([(Event.CHECK_PASSED, 7.0)], ACTIVE, one)
    assert two.up
    assert two.since == 7.0
    assert transitions == [Transition(up=True, message="up: 2 passed health checks in a row")]


def test_with_active_checks_only_checks_bring_it_back() -> None:
    """With active checks a passively failed backend is never on trial: the checks decide."""
    down, _ = _run([(Event.REQUEST_FAILED, 100.0)] * 3, ACTIVE)
    assert not down.up
    assert down.retry_at == math.inf
    assert not down.usable(10_000.0)
    events = [(Event.TRIAL_TAKEN, 10_000.0), (Event.REQUEST_SUCCEEDED, 10_000.0)]
    still, transitions = _run(events, ACTIVE, down)
    assert not still.up
    assert transitions == []


def test_a_failed_check_while_down_resets_the_rise_count() -> None:
    """Passed checks count only in a row on the way up too."""
    down, _ = _run([(Event.CHECK_FAILED, 0.0)] * 3, ACTIVE)
    events = [(Event.CHECK_PASSED, 1.0), (Event.CHECK_FAILED, 2.0), (Event.CHECK_PASSED, 3.0)]
    health, transitions = _run(events, ACTIVE, down)
    assert not health.up
    assert health.successes == 1
    assert transitions == []


@given(
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
    active=st.booleans(),
)
def test_transitions_alternate(events: list[Event], active: bool) -> None:
    """Whatever happens, transitions alternate down, up, down, ... and match the state."""
    policy = replace(ACTIVE, active=active)
    health = BackendHealth()
    expected_up = False
    for t, event in enumerate(events):
        health, transition = observe(health, event, policy, float(t * 4), "why")
        if transition is not None:
            assert transition.up is expected_up
            assert health.up is transition.up
            expected_up = not expected_up
        assert health.failures == 0 or health.successes == 0
        assert health.up or health.trial_at == 0.0 or not active


@pytest.mark.parametrize(
    ("since", "now", "slow_start", "share"),
    [
        pytest.param(0.0, 5.0, 10.0, 1.0, id="up-since-start"),
        pytest.param(100.0, 105.0, 10.0, 0.5, id="halfway"),
        pytest.param(100.0, 110.0, 10.0, 1.0, id="done"),
        pytest.param(100.0, 100.0, 10.0, 0.0, id="just-up"),
        pytest.param(100.0, 101.0, 0.0, 1.0, id="off"),
    ],
)
def test_ramp(since: float, now: float, slow_start: float, share: float) -> None:
    """A backend that came back gets a share growing linearly over slow_start seconds."""
    assert ramp(BackendHealth(up=True, since=since), now, slow_start) == pytest.approx(share)
