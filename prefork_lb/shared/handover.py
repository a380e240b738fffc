"""The install step: the master makes the shared state before it forks; workers attach to it.

The master calls ``install()`` from the ``on_starting`` hook, before it
forks; workers call ``installed()`` when they load the app. Because this
module stays in the master's ``sys.modules``, what it holds survives a HUP
(the config file is re-executed on HUP, an imported module is not).

On HUP the master calls ``reinstall()``: workers forked from then on get new
tables sized for the new backend list, while the old workers, draining, keep
the tables they inherited. What must stay one across the change does: the
rotation counters (each pool keeps its own, by name), the prober lease (the same file, so old
and new workers contend for one lease), each in-flight slot (a slot an old
worker holds stays taken until that worker exits), and the health of every
backend whose URL is in both lists (copied row by row).

The master also hands each worker its slot (its row in the in-flight and
stats tables) just before forking it, and frees it once the worker exits.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from prefork_lb.config import Backend, Settings, effective_pools
from prefork_lb.directory import current_backends, dns_hash_pools, dns_rings
from prefork_lb.errors import ERROR_KINDS
from prefork_lb.health import BackendHealth
from prefork_lb.shared.addresses import AddressTable
from prefork_lb.shared.admission import AdmissionTable
from prefork_lb.shared.counter import RotationCounter
from prefork_lb.shared.figures import Figures, read_figures
from prefork_lb.shared.health_table import HealthTable
from prefork_lb.shared.in_flight import InFlightTable
from prefork_lb.shared.pending_states import PendingStates
from prefork_lb.shared.stats import StatsTable, subtract_row
from prefork_lb.slots import EMPTY, Slot, SlotState


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the master hands to every worker: the settings and the shared tables."""

    settings: Settings
    # One rotation counter per pool, in the order of config.effective_pools.
    rotations: tuple[RotationCounter, ...]
    health: HealthTable
    in_flight: InFlightTable
    stats: StatsTable
    # Waiting rooms and the admission lock (pools in effective_pools order).
    admission: AdmissionTable
    started_at: float  # wall-clock time the master installed it
    # The DNS slots' addresses (one row per backend index) and the resolving lease.
    addresses: AddressTable
    # Saved states (state_file) of DNS addresses not in the balancer when it was read.
    pending_states: PendingStates

    @property
    def rotation(self) -> RotationCounter:
        """The first pool's rotation counter (the ``default`` pool's, when it exists)."""
        return self.rotations[0]

    def figures(
        self,
        health: Sequence[BackendHealth] | None = None,
        backends: Sequence[Backend] | None = None,
    ) -> Figures:
        """Every backend's figures as they are now, summed over all workers.

        ``health`` is the rows as a reader already has them (a ``Selector``
        keeps a copy); without it they are read from the health table.
        ``backends`` likewise (a ``Directory``); without it they are read from
        the address table. DNS slots without an address are left out.
        """
        rows = self.health.snapshot()[1] if health is None else health
        if backends is None:
            backends = self.current_backends()
        return read_figures(
            backends,
            rows,
            self.in_flight,
            self.stats,
            pools=effective_pools(self.settings),
            admission=self.admission,
            shown=self.shown(),
        )

    def current_backends(self) -> tuple[Backend, ...]:
        """``settings.backends`` with every DNS slot holding its address now."""
        if not self.settings.dns_groups:
            return self.settings.backends
        return current_backends(self.settings.backends, self.addresses.snapshot()[1])

    def dns_states(self) -> dict[str, str]:
        """Each DNS-found backend's slot state ("active", "draining"), by its URL now."""
        if not self.settings.dns_groups:
            return {}
        slots = self.addresses.snapshot()[1]
        backends = current_backends(self.settings.backends, slots)
        return {
            backend.url: slots[index].state.name.lower()
            for index, backend in enumerate(backends)
            if backend.dns and slots[index].state != SlotState.EMPTY
        }

    def shown(self) -> tuple[bool, ...] | None:
        """Which backends exist now (a DNS slot only while it holds an address); None: all."""
        if not self.settings.dns_groups:
            return None
        slots = self.addresses.snapshot()[1]
        return tuple(
            not backend.dns or slots[index].state != SlotState.EMPTY
            for index, backend in enumerate(self.settings.backends)
        )

    def close(self) -> None:
        """Release everything (in this process only)."""
        for rotation in self.rotations:
            rotation.close()
        self.health.close()
        self.health.lease.close()
        self.in_flight.close()
        self.stats.close()
        self.admission.close()
        self.addresses.close()
        self.pending_states.close()


_installed: SharedState | None = None
# The in-flight slot of this process: set by the master just before it forks a worker.
_worker_slot: int | None = None
# In the master: the slots that workers forked before a reload still hold, each
# with the (older) in-flight table it belongs to.
_retired_slots: dict[int, InFlightTable] = {}
# In the master: the same slots' stats, each with its (older) table, its row as
# it was at the reload (already counted in the newer table) and that table's
# backend URLs.
_retired_stats: dict[int, tuple[StatsTable, tuple[list[int], list[float]], tuple[str, ...]]] = {}
# In the master: the waiting rooms those slots' workers wait in.
_retired_admission: dict[int, AdmissionTable] = {}


def install(settings: Settings, slots: Mapping[int, Slot] | None = None) -> SharedState:
    """Create the shared state in the master, before any worker is forked.

    ``slots``: the DNS slots the master filled (by backend index), if any.
    """
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    if _installed is not None:
        _installed.close()
    _retired_slots.clear()
    _retired_stats.clear()
    for room in set(_retired_admission.values()):
        room.close()
    _retired_admission.clear()
    count = len(settings.backends)
    _installed = SharedState(
        settings=settings,
        rotations=tuple(RotationCounter() for _ in effective_pools(settings)),
        health=HealthTable(count),
        in_flight=InFlightTable(count),
        stats=StatsTable(count, len(ERROR_KINDS)),
        admission=AdmissionTable(len(effective_pools(settings))),
        started_at=time.time(),
        addresses=_address_table(settings, slots or {}),
        pending_states=_pending_states(settings),
    )
    return _installed


def _address_table(settings: Settings, slots: Mapping[int, Slot]) -> AddressTable:
    """The table for ``settings``, with the slots the master filled and the hash tables of them."""
    table = AddressTable(
        len(settings.backends), len(settings.dns_groups), len(dns_hash_pools(settings))
    )
    every = [slots.get(index, EMPTY) for index in range(len(settings.backends))]
    table.publish(slots, dns_rings(settings, every))
    return table


def reinstall(
    settings: Settings, *, now: float | None = None, slots: Mapping[int, Slot] | None = None
) -> SharedState:
    """On reload, in the master: new shared state for ``settings``, for the workers forked next.

    The workers already running keep the state they inherited until they
    exit. The rotation counter and the prober lease are carried over as they
    are; the health of a backend whose URL is in both lists is copied, and a
    backend new to the list starts up, "since" now (``now`` is a
    ``time.monotonic()`` value). Stats totals so far are carried over by
    backend URL; what the old workers count from now on joins them when each
    exits. A DNS slot's URL is its address's (``slots``: the new ones, as the
    master resolved them), so health and counts follow the address.
    """
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    old = installed()
    now = time.monotonic() if now is None else now
    _, old_rows = old.health.snapshot()
    old_backends = old.current_backends()
    addresses = _address_table(settings, slots or {})
    new_backends = current_backends(settings.backends, addresses.snapshot()[1])
    known = {b.url: row for b, row in zip(old_backends, old_rows, strict=True)}
    added = BackendHealth(since=now, reason="added by a reload")
    rows = [known.get(backend.url, added) for backend in new_backends]
    count = len(settings.backends)
    # Everything that can fail (OSError: no memory to map) before anything changes.
    health = HealthTable(count, rows=rows, lease=old.health.lease)
    in_flight = old.in_flight.successor(count)
    stats = StatsTable(count, len(ERROR_KINDS))
    admission = AdmissionTable(len(effective_pools(settings)))
    for slot in old.in_flight.taken():
        _retired_slots.setdefault(slot, old.in_flight)
        _retired_admission.setdefault(slot, old.admission)
    _carry_stats(old, old_backends, stats, new_backends)
    _installed = SharedState(
        settings=settings,
        rotations=_carry_rotations(old, settings),
        health=health,
        in_flight=in_flight,
        stats=stats,
        admission=admission,
        started_at=old.started_at,
        addresses=addresses,
        pending_states=_pending_states(settings),
    )
    # Only this process's handles: the old workers keep theirs. The old
    # in-flight table stays open while a slot in it is taken.
    for counter in set(old.rotations) - set(_installed.rotations):
        counter.close()
    old.health.close(keep_lease=True)
    if old.in_flight not in _retired_slots.values():
        old.in_flight.close()
    if old.stats not in (table for table, _, _ in _retired_stats.values()):
        old.stats.close()
    if old.admission not in _retired_admission.values():
        old.admission.close()
    old.addresses.close()
    old.pending_states.close()
    return _installed


def _pending_states(settings: Settings) -> PendingStates:
    """Room for as many waiting saved states as the DNS sources have slots (none without)."""
    return PendingStates(sum(group.count for group in settings.dns_groups))


def _carry_rotations(old: SharedState, settings: Settings) -> tuple[RotationCounter, ...]:
    """The new pools' rotation counters: a pool's own from before, by name, else a new one."""
    known = {
        pool.name: counter
        for pool, counter in zip(effective_pools(old.settings), old.rotations, strict=True)
    }
    return tuple(known.get(pool.name) or RotationCounter() for pool in effective_pools(settings))


def _carry_stats(
    old: SharedState,
    old_backends: Sequence[Backend],
    stats: StatsTable,
    backends: Sequence[Backend],
) -> None:
    """Start the new ``stats`` (for ``backends``) from the old state's totals, by backend URL."""
    urls = tuple(backend.url for backend in old_backends)
    columns = _columns(urls, backends)
    stats.retire(old.stats.row(StatsTable.RETIRED), columns)
    for slot in old.in_flight.taken():
        if slot in _retired_stats:
            continue  # a worker from before an earlier reload: it never wrote to this table
        counted = old.stats.row(slot)
        stats.retire(counted, columns)
        _retired_stats[slot] = (old.stats, counted, urls)


def _columns(urls: Sequence[str], backends: Sequence[Backend]) -> list[int | None]:
    """Where each column of a table for ``urls`` goes in a table for ``backends``."""
    index = {backend.url: i for i, backend in enumerate(backends)}
    return [index.get(url) for url in urls] + [len(backends)]


def installed() -> SharedState:
    """Return the state the master installed, or explain how to start the balancer."""
    if _installed is None:
        raise RuntimeError(
            "prefork_lb has no shared state: start it with `gunicorn -c gunicorn.conf.py` "
            "so the master creates it before forking workers (--preload and "
            "--check-config load the app before that and are not supported)"
        )
    return _installed


def assign_worker_slot() -> int | None:
    """In the master, just before a fork: give the next worker an in-flight slot."""
    global _worker_slot  # noqa: PLW0603 - inherited by the worker about to be forked
    _worker_slot = installed().in_flight.claim()
    return _worker_slot


def release_worker_slot(slot: int | None) -> None:
    """In the master, after a worker exited: clear what it had in flight, free its slot."""
    if slot is None or _installed is None:
        return
    retired = _retired_slots.pop(slot, None)
    if retired is not None:
        # A worker from before a reload: its counts are in the table it inherited.
        retired.release(slot)
        if retired not in _retired_slots.values():
            retired.close()
    _installed.in_flight.release(slot)
    room = _retired_admission.pop(slot, None)
    if room is not None:
        room.release(slot)
        if room not in _retired_admission.values():
            room.close()
    _installed.admission.release(slot)
    draining = _retired_stats.pop(slot, None)
    if draining is None:
        _installed.stats.release(slot)
        return
    # A worker from before a reload: what it counted since then, by URL.
    table, counted, urls = draining
    since = subtract_row(table.row(slot), counted)
    _installed.stats.retire(since, _columns(urls, _installed.current_backends()))
    if table not in (other for other, _, _ in _retired_stats.values()):
        table.close()


def release_orphaned_slots(live: Collection[int | None]) -> list[int]:
    """In the master: free the slots of workers gone without a ``child_exit``.

    gunicorn skips that hook when a fork fails after ``pre_fork``, and when it
    finds a worker already gone as it signals it; each would leak a slot.
    ``live`` holds the slots of the workers gunicorn still knows. Returns the
    slots freed.
    """
    if _installed is None:
        return []
    orphans = [slot for slot in _installed.in_flight.taken() if slot not in live]
    for slot in orphans:
        release_worker_slot(slot)
    return orphans


def worker_slot() -> int | None:
    """In a worker: its in-flight slot (None if the master had none left)."""
    return _worker_slot
