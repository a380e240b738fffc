"""Cross-process state: made once in the gunicorn master, inherited by every worker.

This module is the one owner of memory shared between workers. The master
calls ``install()`` from the ``on_starting`` hook, before it forks; workers
call ``installed()`` when they load the app. Because this module stays in the
master's ``sys.modules``, what it holds survives a HUP (the config file is
re-executed on HUP, an imported module is not).

The rotation counter is the file offset of an unlinked temporary file that
every process shares through one open file description, inherited across
fork. ``lseek(fd, 1, SEEK_CUR)`` is a fetch-and-add the kernel does under the
file's position lock (POSIX 2.9.7; Linux takes ``f_pos_lock`` for regular
files opened with open(2) once the file is shared), so there is no user-space
lock for a killed worker to die holding: a ``multiprocessing.Value`` lock held
by a SIGKILLed worker blocks every other worker forever.

It must be a file opened with open(2), not a memfd: memfd files skip the
position lock, and on Linux 6.18 eight processes seeking one memfd lost about
4,000 of 800,000 increments, while the same test on an open(2)ed file lost
none (tests/unit/test_shared.py keeps checking this). The file lives on
/dev/shm when it can (tmpfs: offsets up to 2**63 - 1, nothing ever written).

Health rows (``HealthTable``) change under a POSIX record lock, which the
kernel releases when its holder dies; in-flight counts (``InFlightTable``)
need no lock at all: each worker writes only its own row, and the master
clears a dead worker's row. The prober lease (``ProberLease``) is a record
lock on a file of its own: the one worker that holds it runs the active
health checks, until it exits.

On HUP the master calls ``reinstall()``: workers forked from then on get new
tables sized for the new backend list, while the old workers, draining, keep
the tables they inherited. What must stay one across the change does: the
rotation counter (the same object), the prober lease (the same file, so old
and new workers contend for one lease), each in-flight slot (a slot an old
worker holds stays taken until that worker exits), and the health of every
backend whose URL is in both lists (copied row by row).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prefork_lb.config import Settings
from prefork_lb.errors import ERROR_KINDS
from prefork_lb.health import BackendHealth

_T = TypeVar("_T")


class RotationCounter:
    """A counter that every process forked after its creation advances together."""

    def __init__(self) -> None:
        # Lives as long as the counter: workers inherit it.
        self._file = tempfile.TemporaryFile(prefix="prefork_lb-", dir=_shm_dir())  # noqa: SIM115
        self._fd = self._file.fileno()

    def next(self) -> int:
        """Return the current position and advance it by one, atomically across processes."""
        return os.lseek(self._fd, 1, os.SEEK_CUR) - 1

    def peek(self) -> int:
        """Return the current position without advancing it."""
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        """Release the file (in this process only)."""
        self._file.close()


def _shm_dir() -> str | None:
    shm = "/dev/shm"  # noqa: S108 - TemporaryFile makes an unlinked 0600 file there
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


class ProberLease:
    """The right to run the active health checks: one process at a time, until it exits.

    A record lock on a file of its own, which the kernel drops when its holder
    dies. It outlives a reload (``reinstall`` hands the same lease to the new
    tables), so draining old workers and new ones contend for one lease.
    """

    def __init__(self) -> None:
        # A process loses every record lock on a file when it closes any of its
        # descriptors of that file: nothing else may ever open this one.
        self._file = tempfile.TemporaryFile(prefix="prefork_lb-lease-", dir=_shm_dir())  # noqa: SIM115
        self._fd = self._file.fileno()

    def try_take(self) -> bool:
        """Take the lease if no other process holds it (it is kept until exit)."""
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Release the file (in this process only)."""
        self._file.close()


class HealthTable:
    """Every backend's ``BackendHealth``, in memory shared by every worker.

    Changes are read-modify-writes under a POSIX record lock (``lockf``),
    which the kernel drops when its holder dies: a worker killed mid-update
    cannot wedge the others. It is held for microseconds, never across I/O.
    A generation number, bumped by every change, lets readers keep a copy
    and re-read the rows only when something changed.
    """

    _HEADER = struct.Struct("<Q")
    _ROW = struct.Struct("<?ddddIII64s")
    _REASON_BYTES = 64

    def __init__(
        self,
        count: int,
        *,
        rows: Sequence[BackendHealth] = (),
        lease: ProberLease | None = None,
    ) -> None:
        """``count`` rows, up unless ``rows`` gives their start; the given lease, else a new one."""
        self.count = count
        self._own_lease = lease is None
        self.lease = lease if lease is not None else ProberLease()
        size = self._HEADER.size + self._ROW.size * max(count, 1)
        self._memory = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        # Its own file: record locks belong to a process and a file.
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-lock-", dir=_shm_dir())  # noqa: SIM115
        self._lock_fd = self._lock_file.fileno()
        start = list(rows)[:count]
        start += [BackendHealth()] * (count - len(start))
        for index, row in enumerate(start):
            self._write(index, row)

    def generation(self) -> int:
        """A number that changes whenever any row changes."""
        return int(self._HEADER.unpack_from(self._memory, 0)[0])

    def snapshot(self) -> tuple[int, tuple[BackendHealth, ...]]:
        """The generation and every row, read consistently."""
        with self._locked(_HEALTH_LOCK, shared=True):
            return self.generation(), tuple(self._read(i) for i in range(self.count))

    def update(self, index: int, change: Callable[[BackendHealth], tuple[BackendHealth, _T]]) -> _T:
        """Apply ``change`` to one row atomically across processes; return what it returns.

        ``change`` gets the current row and returns ``(new_row, anything)``;
        it runs under the lock, so it must be quick and do no I/O.
        """
        with self._locked(_HEALTH_LOCK, shared=False):
            new_row, result = change(self._read(index))
            # Generation first: a writer killed between the two leaves readers
            # re-reading too early, never holding on to a stale row.
            self._HEADER.pack_into(self._memory, 0, self.generation() + 1)
            self._write(index, new_row)
            return result

    def try_lease(self) -> bool:
        """Take the prober lease if no other process holds it (it is kept until exit)."""
        return self.lease.try_take()

    @contextlib.contextmanager
    def _locked(self, offset: int, *, shared: bool) -> Iterator[None]:
        fcntl.lockf(self._lock_fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, offset)

    def _read(self, index: int) -> BackendHealth:
        up, since, window_start, retry_at, trial_at, window_fails, failures, successes, reason = (
            self._ROW.unpack_from(self._memory, self._HEADER.size + index * self._ROW.size)
        )
        return BackendHealth(
            up=up,
            since=since,
            reason=reason.rstrip(b"\0").decode("utf-8", "replace"),
            window_start=window_start,
            window_fails=window_fails,
            retry_at=retry_at,
            trial_at=trial_at,
            failures=failures,
            successes=successes,
        )

    def _write(self, index: int, row: BackendHealth) -> None:
        reason = row.reason.encode()[: self._REASON_BYTES]
        self._ROW.pack_into(
            self._memory,
            self._HEADER.size + index * self._ROW.size,
            row.up,
            row.since,
            row.window_start,
            row.retry_at,
            row.trial_at,
            min(row.window_fails, _U32),
            min(row.failures, _U32),
            min(row.successes, _U32),
            reason,
        )

    def close(self, *, keep_lease: bool = False) -> None:
        """Release the memory, the lock file and the lease it made (in this process only)."""
        self._memory.close()
        self._lock_file.close()
        if self._own_lease and not keep_lease:
            self.lease.close()


_HEALTH_LOCK = 0
_U32 = 2**32 - 1


class InFlightTable:
    """Requests in flight to each backend, and open client connections: one writer per row.

    Each worker slot has a cell per backend and one for the client
    connections the worker holds open (one greenlet each). A worker only ever
    changes its own cells, so no lock is needed; readers sum them. The master
    hands out slots before it forks a worker and clears a slot when the
    worker exits, so a killed worker's counts do not linger.
    """

    SLOTS = 128

    def __init__(self, count: int) -> None:
        self.count = count
        # A row per backend, then one for client connections.
        self._memory = mmap.mmap(-1, 8 * self.SLOTS * (count + 1), flags=mmap.MAP_SHARED)
        # Laid out backend by backend, so one backend's rows are contiguous.
        self._cells = memoryview(self._memory).cast("q")
        self._free = list(range(self.SLOTS - 1, -1, -1))

    def successor(self, count: int) -> InFlightTable:
        """A table for ``count`` backends whose free slots are this one's.

        For a reload: the slots that old workers hold stay taken until they exit.
        """
        table = InFlightTable(count)
        table._free = list(self._free)
        return table

    def taken(self) -> list[int]:
        """The slots handed out and not yet released."""
        free = set(self._free)
        return [slot for slot in range(self.SLOTS) if slot not in free]

    def claim(self) -> int | None:
        """In the master, before a fork: a free slot for the next worker, if any is left."""
        return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        """In the master, once a worker has exited: forget its requests, free its slot."""
        for row in range(self.count + 1):
            self._cells[row * self.SLOTS + slot] = 0
        if slot not in self._free:
            self._free.append(slot)

    def add(self, slot: int, backend: int, delta: int) -> None:
        """In a worker: change its own count for one backend."""
        self._cells[backend * self.SLOTS + slot] += delta

    def totals(self) -> list[int]:
        """The in-flight count of every backend, summed over all workers."""
        slots = self.SLOTS
        return [sum(self._cells[b * slots : (b + 1) * slots]) for b in range(self.count)]

    def add_connection(self, slot: int, delta: int) -> None:
        """In a worker: a client connection opened (1) or ended (-1)."""
        self._cells[self.count * self.SLOTS + slot] += delta

    def connections(self) -> int:
        """The client connections open now, summed over all workers."""
        start = self.count * self.SLOTS
        return sum(self._cells[start : start + self.SLOTS])

    def close(self) -> None:
        """Release the memory (in this process only)."""
        self._cells.release()
        self._memory.close()


# Upstream latency histogram bounds, in seconds (the last bucket, +Inf, is implicit).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True, slots=True)
class BackendStats:
    """One column of the stats table, summed over every worker that ever counted in it.

    ``latency_buckets`` holds one count per bucket of ``LATENCY_BUCKETS`` plus
    +Inf, not cumulative.
    """

    responses: tuple[int, ...]  # by STATUS_CLASSES
    aborted: int
    retries: int
    errors: tuple[int, ...]  # by the table's error kinds
    latency_buckets: tuple[int, ...]
    latency_sum: float


class StatsTable:
    """Counters of what every worker did, per backend: one row per worker slot, one writer each.

    Slots are the in-flight table's. Each row has one column per backend and
    a last one for what no backend was chosen for (the balancer's own
    errors). A worker only ever adds to its own row, so no lock is needed;
    readers sum the rows. Totals never go backwards: when a worker exits, the
    master adds its row into the retired row (which only the master writes)
    before clearing it, under a sequence number that readers check, so a
    reader never sees the row counted twice or not at all.
    """

    SLOTS = InFlightTable.SLOTS
    RETIRED = SLOTS  # the row index of the retired row

    def __init__(self, count: int, kinds: int) -> None:
        self.count = count
        self.kinds = kinds
        self.columns = count + 1
        self._aborted = len(STATUS_CLASSES)
        self._retries = self._aborted + 1
        self._errors = self._retries + 1
        self._buckets = self._errors + kinds
        self._width = self._buckets + len(LATENCY_BUCKETS) + 1
        self._row_cells = self.columns * self._width
        rows = self.SLOTS + 1
        ints = 8 * (1 + rows * self._row_cells)  # cell 0: the fold sequence number
        self._memory = mmap.mmap(-1, ints + 8 * rows * self.columns, flags=mmap.MAP_SHARED)
        view = memoryview(self._memory)
        self._cells = view[:ints].cast("q")
        self._sums = view[ints:].cast("d")
        view.release()

    # In a worker, on its own row. ``column`` is a backend's index, or ``count``.

    def count_response(self, slot: int, column: int, status: int) -> None:
        """A response with this status went to the client (its head did)."""
        index = min(max(status // 100, 1), 5) - 1
        self._cells[1 + (slot * self.columns + column) * self._width + index] += 1

    def count_aborted(self, slot: int, column: int) -> None:
        """A response was cut off after its head had gone to the client."""
        self._cells[1 + (slot * self.columns + column) * self._width + self._aborted] += 1

    def count_retry(self, slot: int, column: int) -> None:
        """A try on this backend failed and the request went on to another one."""
        self._cells[1 + (slot * self.columns + column) * self._width + self._retries] += 1

    def count_error(self, slot: int, column: int, kind: int) -> None:
        """A failure of this kind (an index into the error kinds)."""
        self._cells[1 + (slot * self.columns + column) * self._width + self._errors + kind] += 1

    def observe_latency(self, slot: int, column: int, seconds: float) -> None:
        """The time a try took from sending the request to the backend's response head."""
        cell = slot * self.columns + column
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        self._cells[1 + cell * self._width + self._buckets + bucket] += 1
        self._sums[cell] += seconds

    # Readers.

    def totals(self) -> list[BackendStats]:
        """Every column, summed over all rows (the retired one too)."""
        for _ in range(1000):
            before = self._cells[0]
            if before % 2 == 0:
                totals = self._sum_rows()
                if self._cells[0] == before:
                    return totals
            time.sleep(0.0001)  # the master is folding a row (microseconds)
        return self._sum_rows()

    def _sum_rows(self) -> list[BackendStats]:
        width, row_cells, rows = self._width, self._row_cells, self.SLOTS + 1
        result = []
        for column in range(self.columns):
            sums = [0] * width
            for row in range(rows):
                start = 1 + row * row_cells + column * width
                cells = self._cells[start : start + width]
                if any(cells):
                    sums = [a + b for a, b in zip(sums, cells, strict=True)]
            latency = sum(self._sums[row * self.columns + column] for row in range(rows))
            result.append(self._column(sums, latency))
        return result

    def _column(self, cells: Sequence[int], latency_sum: float) -> BackendStats:
        return BackendStats(
            responses=tuple(cells[: self._aborted]),
            aborted=cells[self._aborted],
            retries=cells[self._retries],
            errors=tuple(cells[self._errors : self._buckets]),
            latency_buckets=tuple(cells[self._buckets :]),
            latency_sum=latency_sum,
        )

    # In the master.

    def row(self, slot: int) -> tuple[list[int], list[float]]:
        """A copy of one worker's row: its cells and its latency sums, column by column."""
        start = 1 + slot * self._row_cells
        sums = self._sums[slot * self.columns : (slot + 1) * self.columns]
        return list(self._cells[start : start + self._row_cells]), list(sums)

    def retire(
        self,
        row: tuple[list[int], list[float]],
        columns: Sequence[int | None],
        *,
        clear: int | None = None,
    ) -> None:
        """Add a row read by ``row()`` into the retired row; optionally clear a slot, atomically.

        ``columns`` maps the row's columns (of the table it was read from) to
        this table's; None drops a column (a backend no longer listed).
        """
        width = self._width
        retired = 1 + self.RETIRED * self._row_cells
        cells, sums = row
        self._cells[0] += 1  # odd: readers wait
        try:
            for source, target in enumerate(columns):
                if target is None:
                    continue
                for field in range(width):
                    self._cells[retired + target * width + field] += cells[source * width + field]
                self._sums[self.RETIRED * self.columns + target] += sums[source]
            if clear is not None:
                start = 1 + clear * self._row_cells
                self._cells[start : start + self._row_cells] = _zeros(self._row_cells)
                for column in range(self.columns):
                    self._sums[clear * self.columns + column] = 0.0
        finally:
            self._cells[0] += 1

    def release(self, slot: int) -> None:
        """A worker has exited: its counts join the retired row, its row is cleared."""
        self.retire(self.row(slot), range(self.columns), clear=slot)

    def close(self) -> None:
        """Release the memory (in this process only)."""
        self._cells.release()
        self._sums.release()
        self._memory.close()


def _zeros(count: int) -> memoryview:
    return memoryview(bytes(8 * count)).cast("q")


def subtract_row(
    row: tuple[list[int], list[float]], baseline: tuple[list[int], list[float]]
) -> tuple[list[int], list[float]]:
    """What a row counted since ``baseline`` (an earlier copy of the same row)."""
    return (
        [a - b for a, b in zip(row[0], baseline[0], strict=True)],
        [a - b for a, b in zip(row[1], baseline[1], strict=True)],
    )


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the master hands to every worker: the settings and the shared tables."""

    settings: Settings
    rotation: RotationCounter
    health: HealthTable
    in_flight: InFlightTable
    stats: StatsTable
    started_at: float  # wall-clock time the master installed it

    def close(self) -> None:
        """Release everything (in this process only)."""
        self.rotation.close()
        self.health.close()
        self.health.lease.close()
        self.in_flight.close()
        self.stats.close()


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


def install(settings: Settings) -> SharedState:
    """Create the shared state in the master, before any worker is forked."""
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    if _installed is not None:
        _installed.close()
    _retired_slots.clear()
    _retired_stats.clear()
    count = len(settings.backends)
    _installed = SharedState(
        settings=settings,
        rotation=RotationCounter(),
        health=HealthTable(count),
        in_flight=InFlightTable(count),
        stats=StatsTable(count, len(ERROR_KINDS)),
        started_at=time.time(),
    )
    return _installed


def reinstall(settings: Settings, *, now: float | None = None) -> SharedState:
    """On reload, in the master: new shared state for ``settings``, for the workers forked next.

    The workers already running keep the state they inherited until they
    exit. The rotation counter and the prober lease are carried over as they
    are; the health of a backend whose URL is in both lists is copied, and a
    backend new to the list starts up, "since" now (``now`` is a
    ``time.monotonic()`` value). Stats totals so far are carried over by
    backend URL; what the old workers count from now on joins them when each
    exits.
    """
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    old = installed()
    now = time.monotonic() if now is None else now
    _, old_rows = old.health.snapshot()
    known = {b.url: row for b, row in zip(old.settings.backends, old_rows, strict=True)}
    added = BackendHealth(since=now, reason="added by a reload")
    rows = [known.get(backend.url, added) for backend in settings.backends]
    count = len(settings.backends)
    # Everything that can fail (OSError: no memory to map) before anything changes.
    health = HealthTable(count, rows=rows, lease=old.health.lease)
    in_flight = old.in_flight.successor(count)
    stats = StatsTable(count, len(ERROR_KINDS))
    for slot in old.in_flight.taken():
        _retired_slots.setdefault(slot, old.in_flight)
    _carry_stats(old, stats, settings)
    _installed = SharedState(
        settings=settings,
        rotation=old.rotation,
        health=health,
        in_flight=in_flight,
        stats=stats,
        started_at=old.started_at,
    )
    # Only this process's handles: the old workers keep theirs. The old
    # in-flight table stays open while a slot in it is taken.
    old.health.close(keep_lease=True)
    if old.in_flight not in _retired_slots.values():
        old.in_flight.close()
    if old.stats not in (table for table, _, _ in _retired_stats.values()):
        old.stats.close()
    return _installed


def _carry_stats(old: SharedState, stats: StatsTable, settings: Settings) -> None:
    """Start the new ``stats`` (for ``settings``) from the old state's totals, by backend URL."""
    urls = tuple(backend.url for backend in old.settings.backends)
    columns = _columns(urls, settings)
    stats.retire(old.stats.row(StatsTable.RETIRED), columns)
    for slot in old.in_flight.taken():
        if slot in _retired_stats:
            continue  # a worker from before an earlier reload: it never wrote to this table
        counted = old.stats.row(slot)
        stats.retire(counted, columns)
        _retired_stats[slot] = (old.stats, counted, urls)


def _columns(urls: Sequence[str], settings: Settings) -> list[int | None]:
    """Where each column of a table for ``urls`` goes in a table for ``settings``."""
    index = {backend.url: i for i, backend in enumerate(settings.backends)}
    return [index.get(url) for url in urls] + [len(settings.backends)]


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
    draining = _retired_stats.pop(slot, None)
    if draining is None:
        _installed.stats.release(slot)
        return
    # A worker from before a reload: what it counted since then, by URL.
    table, counted, urls = draining
    since = subtract_row(table.row(slot), counted)
    _installed.stats.retire(since, _columns(urls, _installed.settings))
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
