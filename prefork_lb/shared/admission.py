"""Connection limits and waiting rooms that every worker shares.

Three parts, each safe against a worker killed at any instant:

- the **admission lock**: a POSIX record lock on a file of its own (the
  kernel drops it when its holder dies), held for the few microseconds of
  "sum the in-flight counts, pick a backend below its ``max_conns``, add
  one to this worker's in-flight row". The in-flight rows are the ones
  ``InFlightTable`` already keeps (one writer each, cleared by the master
  when a worker exits), so a killed worker's requests stop counting as
  soon as the master learns of its death; no count is ever left behind.
- the **waiting rooms**: per pool and per worker slot, how many requests
  that worker has waiting and the oldest one's ticket. One writer per row,
  no lock to read them; the master clears a dead worker's rows in
  ``child_exit``. A room's length is the sum of its rows, its head the
  smallest ticket in them.
- the **tickets**: per pool, a ``RotationCounter`` (a kill-safe lseek
  fetch-and-add), so arrival order is one order across all workers.

It also keeps, per pool and per worker, a histogram of queue waits (kept
when a worker exits, so that the counts only ever grow).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import tempfile
from collections.abc import Iterator

from prefork_lb.admission import WAIT_BUCKETS
from prefork_lb.shared.counter import RotationCounter, shm_dir
from prefork_lb.shared.in_flight import InFlightTable

# Cells of one (pool, slot) row.
_WAITING = 0
_HEAD = 1
_BUCKETS = 2  # then one per bucket, then +Inf
_SUM_US = _BUCKETS + len(WAIT_BUCKETS) + 1
_ROW = _SUM_US + 1


class AdmissionTable:
    """Waiting rooms, wait histograms and tickets per pool; the lock that admits requests."""

    SLOTS = InFlightTable.SLOTS

    def __init__(self, pools: int) -> None:
        self.pools = pools
        size = 8 * _ROW * self.SLOTS * max(pools, 1)
        self._memory = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self._cells = memoryview(self._memory).cast("q")
        # Its own file: a process loses its record locks on a file when it
        # closes any descriptor of it, so nothing else may open this one.
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-admit-", dir=shm_dir())  # noqa: SIM115
        self._lock_fd = self._lock_file.fileno()
        self._tickets = [RotationCounter() for _ in range(pools)]

    def _at(self, pool: int, slot: int, cell: int) -> int:
        return (pool * self.SLOTS + slot) * _ROW + cell

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the admission lock (microseconds; never across I/O)."""
        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, 0)

    def ticket(self, pool: int) -> int:
        """The next arrival's ticket for ``pool`` (1, 2, ...: one order across workers)."""
        return self._tickets[pool].next() + 1

    def publish(self, slot: int, pool: int, waiting: int, head: int) -> None:
        """In a worker: how many of its requests wait for ``pool`` and the oldest's ticket."""
        self._cells[self._at(pool, slot, _WAITING)] = waiting
        self._cells[self._at(pool, slot, _HEAD)] = head if waiting else 0

    def waiting(self, pool: int) -> int:
        """Requests waiting for ``pool`` now, over all workers."""
        base = pool * self.SLOTS * _ROW
        return sum(self._cells[base + _WAITING : base + self.SLOTS * _ROW : _ROW])

    def head(self, pool: int) -> int:
        """The oldest waiting ticket for ``pool`` over all workers; 0 when none waits."""
        base = pool * self.SLOTS * _ROW
        heads = [h for h in self._cells[base + _HEAD : base + self.SLOTS * _ROW : _ROW] if h]
        return min(heads, default=0)

    def observe_wait(self, slot: int, pool: int, seconds: float) -> None:
        """In a worker: a request of ``pool`` waited ``seconds`` (admitted or not)."""
        bucket = next(
            (i for i, bound in enumerate(WAIT_BUCKETS) if seconds <= bound), len(WAIT_BUCKETS)
        )
        self._cells[self._at(pool, slot, _BUCKETS + bucket)] += 1
        self._cells[self._at(pool, slot, _SUM_US)] += round(seconds * 1e6)

    def wait_histogram(self, pool: int) -> tuple[list[int], float]:
        """Waits per bucket (the last: +Inf) over all workers, and their total in seconds."""
        counts = [0] * (len(WAIT_BUCKETS) + 1)
        total_us = 0
        for slot in range(self.SLOTS):
            row = self._at(pool, slot, 0)
            for i in range(len(counts)):
                counts[i] += self._cells[row + _BUCKETS + i]
            total_us += self._cells[row + _SUM_US]
        return counts, total_us / 1e6

    def release(self, slot: int) -> None:
        """In the master, once a worker exited: its requests wait no more (waits stay counted)."""
        for pool in range(self.pools):
            self._cells[self._at(pool, slot, _WAITING)] = 0
            self._cells[self._at(pool, slot, _HEAD)] = 0

    def close(self) -> None:
        """Release the memory and files (in this process only)."""
        self._cells.release()
        self._memory.close()
        self._lock_file.close()
        for counter in self._tickets:
            counter.close()
