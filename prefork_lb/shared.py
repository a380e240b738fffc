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
clears a dead worker's row. The same lock file carries the prober lease: the
one worker that holds it runs the active health checks, until it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from prefork_lb.config import Settings
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

    def __init__(self, count: int) -> None:
        self.count = count
        size = self._HEADER.size + self._ROW.size * max(count, 1)
        self._memory = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        # Its own file: record locks belong to a process and a file.
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-lock-", dir=_shm_dir())  # noqa: SIM115
        self._lock_fd = self._lock_file.fileno()
        for index in range(count):
            self._write(index, BackendHealth())

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
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _PROBER_LEASE)
        except OSError:
            return False
        return True

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

    def close(self) -> None:
        """Release the memory and the lock file (in this process only)."""
        self._memory.close()
        self._lock_file.close()


_HEALTH_LOCK = 0
_PROBER_LEASE = 1
_U32 = 2**32 - 1


class InFlightTable:
    """Requests in flight to each backend: one row per worker slot, one writer per row.

    A worker only ever changes its own row, so no lock is needed; readers sum
    the rows. The master hands out slots before it forks a worker and clears
    a slot when the worker exits, so a killed worker's requests do not linger.
    """

    SLOTS = 128

    def __init__(self, count: int) -> None:
        self.count = count
        self._memory = mmap.mmap(-1, 8 * self.SLOTS * max(count, 1), flags=mmap.MAP_SHARED)
        # Laid out backend by backend, so one backend's rows are contiguous.
        self._cells = memoryview(self._memory).cast("q")
        self._free = list(range(self.SLOTS - 1, -1, -1))

    def claim(self) -> int | None:
        """In the master, before a fork: a free slot for the next worker, if any is left."""
        return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        """In the master, once a worker has exited: forget its requests, free its slot."""
        for backend in range(self.count):
            self._cells[backend * self.SLOTS + slot] = 0
        if slot not in self._free:
            self._free.append(slot)

    def add(self, slot: int, backend: int, delta: int) -> None:
        """In a worker: change its own count for one backend."""
        self._cells[backend * self.SLOTS + slot] += delta

    def totals(self) -> list[int]:
        """The in-flight count of every backend, summed over all workers."""
        slots = self.SLOTS
        return [sum(self._cells[b * slots : (b + 1) * slots]) for b in range(self.count)]

    def close(self) -> None:
        """Release the memory (in this process only)."""
        self._cells.release()
        self._memory.close()


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the master hands to every worker: the settings and the shared tables."""

    settings: Settings
    rotation: RotationCounter
    health: HealthTable
    in_flight: InFlightTable
    started_at: float  # wall-clock time the master installed it

    def close(self) -> None:
        """Release everything (in this process only)."""
        self.rotation.close()
        self.health.close()
        self.in_flight.close()


_installed: SharedState | None = None
# The in-flight slot of this process: set by the master just before it forks a worker.
_worker_slot: int | None = None


def install(settings: Settings) -> SharedState:
    """Create the shared state in the master, before any worker is forked."""
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    if _installed is not None:
        _installed.close()
    count = len(settings.backends)
    _installed = SharedState(
        settings=settings,
        rotation=RotationCounter(),
        health=HealthTable(count),
        in_flight=InFlightTable(count),
        started_at=time.time(),
    )
    return _installed


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
    """In the master, after a worker exited: clear what it had in flight."""
    if slot is not None and _installed is not None:
        _installed.in_flight.release(slot)


def worker_slot() -> int | None:
    """In a worker: its in-flight slot (None if the master had none left)."""
    return _worker_slot
