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
from collections.abc import Callable, Sequence

from prefork_lb.admission import AtCapacity, at_limit, may_take_slot
from prefork_lb.config import Backend, Member, Pool, Settings, effective_pools
from prefork_lb.directory import Directory, dns_hash_pools, ring_members
from prefork_lb.errors import NoBackendAvailable
from prefork_lb.hashing import HashRing, ring_for
from prefork_lb.health import BackendHealth, Event, HealthPolicy, observe, ramp
from prefork_lb.outlier import (
    OutlierPolicy,
    after_checks_passed,
    ejected,
    is_error,
    members_in_set,
    observe_status,
)
from prefork_lb.runtime import Change
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
from prefork_lb.slots import SlotState

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


def hash_rings(
    settings: Settings,
    backends: Sequence[Backend] | None = None,
    states: Sequence[SlotState] | None = None,
) -> list[HashRing | None]:
    """Each pool's hash table (None for a pool that does not hash, or has no backend yet).

    The master calls it before it forks (``hooks``), so that workers find the
    tables already built (``hashing.ring_for`` remembers them). ``backends``
    and ``states``: as they are now (``directory``): a DNS slot counts only
    while it holds an address that is not draining (``ring_members``).
    """
    backends = settings.backends if backends is None else backends
    return [
        ring_for(members) if pool.policy == HASH and members else None
        for pool in effective_pools(settings)
        for members in (ring_members(settings, pool, backends, states),)
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
        # Backends from DNS: a view that follows the address table; else the plain tuple.
        self._directory = (
            Directory(settings.backends, state.addresses) if settings.dns_groups else None
        )
        self.backends: Sequence[Backend] = self._directory or settings.backends
        self.follows_dns = self._directory is not None
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
        # Called with the backends there are now, when addresses from DNS changed.
        self.on_backends_changed: Callable[[list[Backend]], None] | None = None
        # From URLs and weights only: the same in every process (made by the master).
        self._rings = hash_rings(settings)  # without DNS addresses: those come next
        # Pools hashing over DNS addresses: their tables as the publisher built them.
        self._dns_rings = dns_hash_pools(settings)
        if self._directory is not None:
            self._read_dns_rings(self._directory)
        self._least_conn = tuple(pool.policy == LEAST_CONN for pool in self.pools)
        self._outlier = (
            OutlierPolicy(
                consecutive=settings.eject_consecutive_5xx,
                on_500=settings.eject_on_500,
                base_time=settings.eject_time,
                max_time=settings.eject_max_time,
                max_percent=settings.eject_max_percent,
            )
            if settings.eject_consecutive_5xx
            else None
        )
        # For each backend, the members of every pool it is in (the ejection limit).
        self._pools_of = tuple(
            tuple(
                tuple(m.index for m in pool.members)
                for pool in self.pools
                if any(m.index == index for m in pool.members)
            )
            for index in range(len(self.backends))
        )

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

    def any_eligible(self, exclude: frozenset[int], pool: int) -> bool:
        """Whether a backend of ``pool`` not in ``exclude`` could be chosen now (no side effect)."""
        try:
            self._eligible(time.monotonic(), exclude, pool)
        except NoBackendAvailable:
            return False
        return True

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
        if passed and self._outlier is not None:
            self._refresh()
            if ejected(self._rows[index], time.monotonic()):
                rise = self.backends[index].check.rise
                now = time.monotonic()
                if self._state.health.update(
                    index, lambda row: after_checks_passed(row, rise, now)
                ):
                    log.info("backend %s back from ejection: checks pass", self.backends[index].url)

    def answered(self, index: int, status: int) -> None:
        """This backend answered with ``status`` (for outlier ejection; only when it is on)."""
        policy = self._outlier
        if policy is None:
            return
        if not is_error(status, policy):
            self._refresh()
            if not self._rows[index].run_5xx:
                return  # nothing to reset: no lock taken
        now = time.monotonic()
        pools = self._pools_of[index]
        states = self._directory.states if self._directory is not None else None

        def count(
            row: BackendHealth, rows: tuple[BackendHealth, ...]
        ) -> tuple[BackendHealth, str | None]:
            members = [members_in_set(pool, rows, states) for pool in pools]
            return observe_status(row, status, policy, now, members)

        message = self._state.health.update_seeing(index, count)
        if message is not None:
            log.warning("backend %s %s", self.backends[index].url, message)

    def control(self, change: Change) -> BackendHealth:
        """Make an operator's change to a backend's row, for every worker; return the old row."""

        def make(row: BackendHealth) -> tuple[BackendHealth, BackendHealth]:
            return change.apply(row), row

        return self._state.health.update(change.index, make)

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
        if self._directory is not None and self._directory.refresh():
            self._cached = [None] * len(self.pools)
            self._read_dns_rings(self._directory)
            if self.on_backends_changed is not None:
                self.on_backends_changed(
                    [b for i, b in enumerate(self._directory) if self._directory.present(i)]
                )

    def _read_dns_rings(self, directory: Directory) -> None:
        """The hash tables of pools over DNS addresses, from the address table (no build)."""
        for number, pool in enumerate(self._dns_rings):
            entries = self._state.addresses.ring(number)
            members = ring_members(self._settings, self.pools[pool], directory, directory.states)
            self._rings[pool] = (
                HashRing(entries, {index: weight for index, _, weight in members})
                if entries is not None
                else None
            )

    def _eligible(self, now: float, exclude: frozenset[int], pool: int) -> Eligible:
        self._refresh()
        cached = self._cached[pool]
        if not exclude and cached is not None and now < self._stable_until[pool]:
            return cached
        slow_start = self._settings.slow_start
        rows = self._rows
        members = self.pools[pool].members
        if self._directory is not None:
            members = self._present_members(members)
        candidates = [
            Candidate(
                index=member.index,
                weight=rows[member.index].weight or member.weight,
                backup=member.backup,
                usable=rows[member.index].usable(now) and now >= rows[member.index].ejected_until,
                share=ramp(rows[member.index], now, slow_start),
            )
            for member in members
        ]
        # Drained and in maintenance: never chosen, not even fail-open or alone.
        held = frozenset(m.index for m in members if rows[m.index].admin)
        if self._directory is not None:
            # An address gone from DNS is drained the same way.
            states = self._directory.states
            held |= {m.index for m in members if states[m.index] == SlotState.DRAINING}
        try:
            choice = eligible(
                candidates, exclude=exclude | held, fail_open=self._settings.fail_open
            )
        except NoBackendAvailable:
            if not members:
                raise NoBackendAvailable("no address found through DNS yet") from None
            if held and held.issuperset(m.index for m in members if m.index not in exclude):
                raise NoBackendAvailable(
                    "every backend is drained or in maintenance"
                    if not exclude
                    else "every other backend is drained, in maintenance or already tried"
                ) from None
            raise
        if not exclude:
            self._cached[pool] = choice
            self._stable_until[pool] = self._next_change(now, slow_start)
        return choice

    def present(self, index: int) -> bool:
        """Whether backend ``index`` exists now (a listed one, or a DNS slot holding an address)."""
        self._refresh()
        return self._directory is None or self._directory.present(index)

    def _present_members(self, members: tuple[Member, ...]) -> tuple[Member, ...]:
        """The members that exist now: a DNS slot with an address, with its weight and backup."""
        assert self._directory is not None
        backends, states = self._directory, self._directory.states
        return tuple(
            Member(m.index, backends[m.index].weight, backends[m.index].backup)
            if backends[m.index].dns
            else m
            for m in members
            if states[m.index] != SlotState.EMPTY
        )

    def _next_change(self, now: float, slow_start: float) -> float:
        """When the passing of time alone next changes the choice."""
        changes = [math.inf]
        for row in self._rows:
            if row.ejected_until > now:
                changes.append(row.ejected_until)
            if not row.up and row.retry_at > now:
                changes.append(row.retry_at)
            elif row.up and slow_start > 0 and row.since and row.since + slow_start > now:
                # Re-weigh in steps while it ramps up.
                changes.append(min(row.since + slow_start, now + slow_start / 10))
            elif not row.up:
                # On trial: re-read soon, the outcome of a trial changes the rows.
                changes.append(now)
        return min(changes)
