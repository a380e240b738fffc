"""A worker's view of the backends: picks one per try, reports what happened.

The shell around ``scheduling`` (selection) and ``health`` (state machine):
it reads the health rows and in-flight counts every worker shares, asks the
pure core for a decision, and writes outcomes back. A change between up and
down is made under the health table's lock, so exactly one process sees it
happen, and that process logs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from prefork_lb.admission import AtCapacity, at_limit, may_take_slot
from prefork_lb.config import Backend, Pool, Settings, effective_pools
from prefork_lb.hashing import HashRing, ring_for
from prefork_lb.health import BackendHealth, Event, HealthPolicy, observe, ramp
from prefork_lb.scheduling import (
    HASH,
    LEAST_CONN,
    Candidate,
    Eligible,
    eligible,
    pick_least_conn,
    pick_round_robin,
)
from prefork_lb.shared import AdmissionTable, SharedState

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


def hash_rings(settings: Settings) -> list[HashRing | None]:
    """Each pool's hash table (None for a pool that does not hash).

    The master calls it before it forks (``hooks``), so that workers find the
    tables already built (``hashing.ring_for`` remembers them).
    """
    backends = settings.backends
    return [
        ring_for(tuple((m.index, backends[m.index].url, m.weight) for m in pool.members))
        if pool.policy == HASH
        else None
        for pool in effective_pools(settings)
    ]


def health_policy(backend: Backend) -> HealthPolicy:
    """The health thresholds a backend's settings give it."""
    return HealthPolicy(
        max_fails=backend.max_fails,
        fail_timeout=backend.fail_timeout,
        active=backend.check.enabled,
        rise=backend.check.rise,
        fall=backend.check.fall,
    )


class Selector:
    """Chooses backends for one worker from the state all workers share."""

    def __init__(self, settings: Settings, state: SharedState, slot: int | None) -> None:
        self.backends = settings.backends
        self._settings = settings
        self._state = state
        self._slot = slot
        self.pools: tuple[Pool, ...] = effective_pools(settings)
        self._policies = tuple(health_policy(backend) for backend in self.backends)
        self._generation = -1
        self._rows: tuple[BackendHealth, ...] = ()
        # Per pool, the choice for a request with nothing excluded, valid until
        # _stable_until (a trial or a slow start changes it with time alone).
        self._cached: list[Eligible | None] = [None] * len(self.pools)
        self._stable_until = [0.0] * len(self.pools)
        self._max_conns = tuple(backend.max_conns for backend in self.backends)
        # Pools with a backend under max_conns: choosing takes a slot under the admission lock.
        self.limited = tuple(
            any(self._max_conns[m.index] for m in pool.members) for pool in self.pools
        )
        # Called when a request to a limited backend ends (the waiting room's wake).
        self.on_release: Callable[[int], None] | None = None
        # From URLs and weights only: the same in every process (made by the master).
        self._rings = hash_rings(settings)
        self._least_conn = tuple(pool.policy == LEAST_CONN for pool in self.pools)

    def choose(
        self,
        exclude: frozenset[int] = frozenset(),
        pool: int = 0,
        key: int | None = None,
        prefer: int | None = None,
    ) -> int:
        """The index of a backend of ``pool`` for the next try (raises NoBackendAvailable).

        ``prefer`` (a sticky cookie's backend) is chosen while it is eligible.
        ``key`` is the request's hash (``hashing.key_hash``) for a ``hash`` pool;
        without one the request goes round robin.

        A down backend that is due a trial is chosen only by the one request
        that takes the trial; any other is sent elsewhere. For a pool with
        ``max_conns`` limits, use ``admit``.
        """
        now = time.monotonic()
        while True:
            index = self._pick(now, exclude, pool, key, prefer)
            row = self._rows[index]
            if row.up or not row.usable(now) or self._take_trial(index, now):
                # Up; or down and chosen anyway (fail-open, a lone backend); or on trial.
                return index
            exclude |= {index}

    def admit(
        self,
        exclude: frozenset[int],
        pool: int,
        key: int | None,
        prefer: int | None,
        ticket: int | None = None,
    ) -> int:
        """``choose`` for a pool with ``max_conns`` limits: the backend is counted in flight.

        It is chosen and counted under the admission lock, so that no two
        workers take a backend's last slot. ``AtCapacity`` when every eligible
        backend is at its limit, or when older requests wait (``ticket``: a
        waiting request's own).
        """
        admission = self._state.admission
        with admission.locked():
            if not may_take_slot(admission.waiting(pool), admission.head(pool), ticket):
                raise AtCapacity
            choice = self._eligible(time.monotonic(), exclude, pool)
            full = at_limit(choice.indexes, self._state.in_flight.totals(), self._max_conns)
            if full.issuperset(choice.indexes):
                raise AtCapacity
            index = self.choose(exclude | full, pool, key, prefer)
            self.started(index)
            return index

    def _pick(
        self, now: float, exclude: frozenset[int], pool: int, key: int | None, prefer: int | None
    ) -> int:
        choice = self._eligible(now, exclude, pool)
        if key is not None or prefer is not None:
            found = self._affinity(choice, pool, key, prefer)
            if found is not None:
                return found
        position = self._state.rotations[pool].next()
        if self._least_conn[pool]:
            return pick_least_conn(choice, self._state.in_flight.totals(), position)
        return pick_round_robin(choice, position)

    def _affinity(
        self, choice: Eligible, pool: int, key: int | None, prefer: int | None
    ) -> int | None:
        """The sticky backend if eligible, else the key's on the hash table, else None."""
        if prefer is not None and prefer in choice.indexes:
            return prefer
        ring = self._rings[pool]
        if ring is None or key is None:
            return None
        factor = self.pools[pool].hash_balance_factor
        loads = self._state.in_flight.totals() if factor else None
        return ring.pick(key, choice.indexes, loads, factor)

    def _take_trial(self, index: int, now: float) -> bool:
        policy = self._policies[index]

        def take(row: BackendHealth) -> tuple[BackendHealth, bool]:
            taken, _ = observe(row, Event.TRIAL_TAKEN, policy, now)
            return taken, taken is not row

        return self._state.health.update(index, take)

    def started(self, index: int) -> None:
        """A request is now in flight to this backend."""
        if self._slot is not None:
            self._state.in_flight.add(self._slot, index, 1)

    def finished(self, index: int) -> None:
        """A request to this backend is over, however it ended."""
        if self._slot is not None:
            self._state.in_flight.add(self._slot, index, -1)
        if self.on_release is not None and self._max_conns[index]:
            self.on_release(index)

    @property
    def admission(self) -> AdmissionTable:
        """The shared waiting rooms and admission lock."""
        return self._state.admission

    @property
    def slot(self) -> int | None:
        """This worker's row in the shared tables."""
        return self._slot

    def request_failed(self, index: int, reason: str) -> None:
        """A request could not get a response from this backend."""
        self._report(index, Event.REQUEST_FAILED, reason)

    def request_succeeded(self, index: int) -> None:
        """This backend answered; that only matters while it is down and on trial."""
        self._refresh()
        if not self._rows[index].up:
            self._report(index, Event.REQUEST_SUCCEEDED, "")

    def check_done(self, index: int, *, passed: bool, reason: str) -> None:
        """An active health check of this backend passed or failed."""
        self._report(index, Event.CHECK_PASSED if passed else Event.CHECK_FAILED, reason)

    def health(self) -> tuple[BackendHealth, ...]:
        """Every backend's health as last written."""
        self._refresh()
        return self._rows

    def _report(self, index: int, event: Event, reason: str) -> None:
        policy = self._policies[index]
        now = time.monotonic()
        transition = self._state.health.update(
            index, lambda row: observe(row, event, policy, now, reason)
        )
        if transition is not None:
            level = logging.INFO if transition.up else logging.WARNING
            log.log(level, "backend %s %s", self.backends[index].url, transition.message)

    def _refresh(self) -> None:
        if self._state.health.generation() != self._generation:
            self._generation, self._rows = self._state.health.snapshot()
            self._cached = [None] * len(self.pools)

    def _eligible(self, now: float, exclude: frozenset[int], pool: int) -> Eligible:
        self._refresh()
        cached = self._cached[pool]
        if not exclude and cached is not None and now < self._stable_until[pool]:
            return cached
        slow_start = self._settings.slow_start
        rows = self._rows
        candidates = [
            Candidate(
                index=member.index,
                weight=member.weight,
                backup=member.backup,
                usable=rows[member.index].usable(now),
                share=ramp(rows[member.index], now, slow_start),
            )
            for member in self.pools[pool].members
        ]
        choice = eligible(candidates, exclude=exclude, fail_open=self._settings.fail_open)
        if not exclude:
            self._cached[pool] = choice
            self._stable_until[pool] = self._next_change(now, slow_start)
        return choice

    def _next_change(self, now: float, slow_start: float) -> float:
        """When the passing of time alone next changes the choice."""
        changes = [math.inf]
        for row in self._rows:
            if not row.up and row.retry_at > now:
                changes.append(row.retry_at)
            elif row.up and slow_start > 0 and row.since and row.since + slow_start > now:
                # Re-weigh in steps while it ramps up.
                changes.append(min(row.since + slow_start, now + slow_start / 10))
            elif not row.up:
                # On trial: re-read soon, the outcome of a trial changes the rows.
                changes.append(now)
        return min(changes)
