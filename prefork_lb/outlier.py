"""Outlier ejection by status: every rule in this one file, no I/O, the clock passed in.

Envoy's consecutive-5xx outlier detection, counted over every worker in the
backend's health row:

=====================  ===============================================
answer                 rule
=====================  ===============================================
502, 503, 504          one more in the run (500 too with ``on_500``)
any other status       the run ends (0)
run reaches N          ejected for ``base_time`` x the times it has been
                       ejected (this one included), at most ``max_time``;
                       unless that would eject more than ``max_percent``
                       of one of its pools (the run is kept: the next
                       error tries again); a pool's members are those in
                       the set (``members_in_set``)
ejection time over     usable again (``ejections`` is kept: the next
                       ejection lasts longer)
``rise`` checks pass   with active checks (counted from the ejection),
                       the ejection ends early
=====================  ===============================================

An ejected backend is treated as down by selection (usable again when the
time is over), so fail-open and a lone backend behave as for down ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from prefork_lb.health import BackendHealth
from prefork_lb.slots import SlotState

GATEWAY_ERRORS = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """The ejection settings (``eject_*``); ``consecutive == 0`` turns ejection off."""

    consecutive: int
    on_500: bool = False
    base_time: float = 30.0
    max_time: float = 300.0
    max_percent: int = 50


def is_error(status: int, policy: OutlierPolicy) -> bool:
    """Whether this status counts towards ejection."""
    return status in GATEWAY_ERRORS or (policy.on_500 and status == 500)


def ejected(row: BackendHealth, now: float) -> bool:
    """Whether the backend is ejected now."""
    return now < row.ejected_until


def members_in_set(
    members: Sequence[int], rows: Sequence[BackendHealth], states: Sequence[SlotState] | None
) -> list[BackendHealth]:
    """The rows of a pool's ``members`` (backend indexes) that ``max_percent`` counts.

    Listed backends and the addresses DNS gives now (``states``: each
    backend's slot state, a listed one ACTIVE; None: no DNS source). Not an
    EMPTY slot: it is no backend, and counting it would let the real ones
    all be ejected. Not a DRAINING one either: it has left the answer and
    takes no new request, so it is no part of the capacity the limit keeps.
    """
    return [rows[index] for index in members if states is None or states[index] == SlotState.ACTIVE]


def may_eject(pool_rows: Sequence[BackendHealth], now: float, max_percent: int) -> bool:
    """Whether one more of this pool's backends may be ejected, within ``max_percent``.

    ``pool_rows``: the rows of the pool's members in the set (``members_in_set``).
    """
    already = sum(1 for row in pool_rows if ejected(row, now))
    return (already + 1) * 100 <= max_percent * len(pool_rows)


def observe_status(
    row: BackendHealth,
    status: int,
    policy: OutlierPolicy,
    now: float,
    pools: Sequence[Sequence[BackendHealth]],
) -> tuple[BackendHealth, str | None]:
    """The row after an answer with ``status``, and a message if it was ejected by it.

    ``pools`` holds, for each pool the backend is in, the rows of its members
    in the set (``members_in_set``).
    """
    if not is_error(status, policy):
        return (replace(row, run_5xx=0) if row.run_5xx else row), None
    run = row.run_5xx + 1
    if run < policy.consecutive or ejected(row, now):
        return replace(row, run_5xx=run), None
    if not all(may_eject(members, now, policy.max_percent) for members in pools):
        return replace(row, run_5xx=run), None
    times = row.ejections + 1
    seconds = min(policy.base_time * times, policy.max_time)
    # successes restarts: only checks passed since the ejection end it early.
    ejected_row = replace(row, run_5xx=0, ejections=times, ejected_until=now + seconds, successes=0)
    return ejected_row, (
        f"ejected for {seconds:g} s: {run} answers 5xx in a row (ejection {times})"
    )


def after_checks_passed(row: BackendHealth, rise: int, now: float) -> tuple[BackendHealth, bool]:
    """With active checks: an ejection ends once ``rise`` checks in a row passed."""
    if ejected(row, now) and row.successes >= rise:
        return replace(row, ejected_until=0.0), True
    return row, False
