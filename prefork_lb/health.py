"""The health state machine of one backend: every rule in this one file, no I/O.

A backend is up or down. Five events move it:

=====  ================  ==========================================================
state  event             rule
=====  ================  ==========================================================
up     request failed    counted in a window of ``fail_timeout`` seconds;
                         ``max_fails`` in one window: down (nginx's passive checks)
up     check failed      ``fall`` failed checks in a row: down
up     check passed      clears the run of failed checks
up     request ok        nothing (successes are not reported while up)
down   check passed      ``rise`` passed checks in a row: up
down   check failed      clears the run of passed checks
down   trial taken       once ``fail_timeout`` has passed, one request may try it;
                         no other until the trial is decided or times out
down   request failed    the trial failed: down for ``fail_timeout`` more
down   request ok        the trial succeeded: up
=====  ================  ==========================================================

Trials are for backends without active checks (nginx's behaviour: one
request per ``fail_timeout``); with active checks only the checks bring a
backend back. Failed requests and failed checks are counted apart:
``max_fails`` counts requests within a window, ``fall`` counts checks in a row.

Times are ``time.monotonic()`` values passed in as ``now``; ``since == 0``
means "in this state since the balancer started".
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace


class Event(enum.Enum):
    """Something the balancer learned about a backend."""

    REQUEST_FAILED = "request failed"
    REQUEST_SUCCEEDED = "request succeeded"
    CHECK_FAILED = "check failed"
    CHECK_PASSED = "check passed"
    TRIAL_TAKEN = "trial taken"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The thresholds that apply to one backend (from its settings, which hold the defaults)."""

    max_fails: int
    fail_timeout: float
    active: bool
    rise: int
    fall: int


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """What every worker knows about one backend."""

    up: bool = True
    since: float = 0.0
    reason: str = ""
    # Passive checks: failed requests in the window that began at window_start.
    window_start: float = 0.0
    window_fails: int = 0
    # Down without active checks: when a request may try it again, and when
    # the request now trying it (if any) was sent.
    retry_at: float = 0.0
    trial_at: float = 0.0
    # Runs of the same active-check outcome.
    failures: int = 0
    successes: int = 0
    # Set by an operator (runtime.py), not by health: 0 ready, 1 drain, 2 maint;
    # and a weight that replaces the configured one (0: as configured).
    admin: int = 0
    weight: int = 0
    # Outlier ejection (outlier.py): 5xx answers in a row, times ejected, ejected until.
    run_5xx: int = 0
    ejections: int = 0
    ejected_until: float = 0.0

    def usable(self, now: float) -> bool:
        """Whether a request may go to this backend now (up, or down and due a trial)."""
        return self.up or now >= self.retry_at


@dataclass(frozen=True, slots=True)
class Transition:
    """A change between up and down, with the line that tells the operator why."""

    up: bool
    message: str


Outcome = tuple[BackendHealth, Transition | None]
_Rule = Callable[[BackendHealth, HealthPolicy, float, str], Outcome]


def observe(
    health: BackendHealth, event: Event, policy: HealthPolicy, now: float, reason: str = ""
) -> Outcome:
    """Apply one event; return the new health and the transition it caused, if any."""
    return _RULES[health.up, event](health, policy, now, reason)


def _up_request_failed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    if p.max_fails == 0:
        return h, None
    in_window = h.window_fails > 0 and now - h.window_start < p.fail_timeout
    start = h.window_start if in_window else now
    fails = h.window_fails + 1 if in_window else 1
    h = replace(h, window_start=start, window_fails=fails)
    if fails < p.max_fails:
        return h, None
    noun = "failure" if fails == 1 else "failures"
    why = f"{fails} {noun} in {p.fail_timeout:g} s ({reason})"
    return _down(h, p, now, why), Transition(up=False, message=f"down: {why}")


def _up_check_failed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    h = replace(h, failures=h.failures + 1, successes=0)
    if h.failures < p.fall:
        return h, None
    noun = "check" if h.failures == 1 else "checks"
    why = f"{h.failures} failed health {noun} in a row ({reason})"
    return _down(h, p, now, why), Transition(up=False, message=f"down: {why}")


def _up_check_passed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    return replace(h, failures=0, successes=h.successes + 1), None


def _unchanged(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    return h, None


def _down_check_passed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    h = replace(h, failures=0, successes=h.successes + 1)
    if h.successes < p.rise:
        return h, None
    noun = "check" if h.successes == 1 else "checks"
    why = f"{h.successes} passed health {noun} in a row"
    return _up(h, now, why), Transition(up=True, message=f"up: {why}")


def _down_check_failed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    return replace(h, failures=h.failures + 1, successes=0), None


def _down_trial_taken(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    if p.active or now < h.retry_at:
        return h, None  # another request took the trial first
    # Nobody else tries it until this trial is decided, or fail_timeout passes.
    return replace(h, trial_at=now, retry_at=now + p.fail_timeout), None


def _down_request_failed(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    if p.active or not h.trial_at:
        return h, None  # sent before it went down: nothing new
    why = f"failed again on trial ({reason})"
    return replace(h, reason=why, trial_at=0.0, retry_at=now + p.fail_timeout), None


def _down_request_succeeded(h: BackendHealth, p: HealthPolicy, now: float, reason: str) -> Outcome:
    if p.active or not h.trial_at:
        return h, None
    why = f"a request succeeded on trial after {now - h.since:.0f} s down"
    return _up(h, now, why), Transition(up=True, message=f"up: {why}")


def _down(h: BackendHealth, p: HealthPolicy, now: float, why: str) -> BackendHealth:
    # With active checks only the checks bring a backend back; without, it goes on trial.
    retry_at = math.inf if p.active else now + p.fail_timeout
    since = h.since if not h.up else now
    return replace(
        h,
        up=False,
        since=since,
        reason=why,
        retry_at=retry_at,
        trial_at=0.0,
        window_fails=0,
        successes=0,
    )


def _up(h: BackendHealth, now: float, why: str) -> BackendHealth:
    return replace(
        h, up=True, since=now, reason=why, retry_at=0.0, trial_at=0.0, window_fails=0, failures=0
    )


_RULES: dict[tuple[bool, Event], _Rule] = {
    (True, Event.REQUEST_FAILED): _up_request_failed,
    (True, Event.CHECK_FAILED): _up_check_failed,
    (True, Event.CHECK_PASSED): _up_check_passed,
    (True, Event.REQUEST_SUCCEEDED): _unchanged,
    (True, Event.TRIAL_TAKEN): _unchanged,
    (False, Event.CHECK_PASSED): _down_check_passed,
    (False, Event.CHECK_FAILED): _down_check_failed,
    (False, Event.TRIAL_TAKEN): _down_trial_taken,
    (False, Event.REQUEST_FAILED): _down_request_failed,
    (False, Event.REQUEST_SUCCEEDED): _down_request_succeeded,
}


def ramp(health: BackendHealth, now: float, slow_start: float) -> float:
    """The share (0 < share <= 1) of its weight a backend gets while it slow-starts."""
    if slow_start <= 0 or not health.up or health.since == 0.0:
        return 1.0
    elapsed = now - health.since
    return 1.0 if elapsed >= slow_start else max(elapsed / slow_start, 0.0)
