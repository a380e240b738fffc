"""Health rows every worker shares, and the prober lease.

Health rows (``HealthTable``) change under a POSIX record lock, which the
kernel releases when its holder dies. The prober lease (``ProberLease``) is a
record lock on a file of its own: the one worker that holds it runs the
active health checks, until it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from prefork_lb.health import BackendHealth
from prefork_lb.shared.counter import shm_dir

_T = TypeVar("_T")


class ProberLease:
    """The right to run the active health checks: one process at a time, until it exits.

    A record lock on a file of its own, which the kernel drops when its holder
    dies. It outlives a reload (``reinstall`` hands the same lease to the new
    tables), so draining old workers and new ones contend for one lease.
    """

    def __init__(self) -> None:
        # A process loses every record lock on a file when it closes any of its
        # descriptors of that file: nothing else may ever open this one.
        self._file = tempfile.TemporaryFile(prefix="prefork_lb-lease-", dir=shm_dir())  # noqa: SIM115
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
    _ROW = struct.Struct("<?ddddIIIBIIId64s")
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
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-lock-", dir=shm_dir())  # noqa: SIM115
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

    def update_seeing(
        self,
        index: int,
        change: Callable[[BackendHealth, tuple[BackendHealth, ...]], tuple[BackendHealth, _T]],
    ) -> _T:
        """``update``, with ``change`` also given every row as it is under the lock."""
        with self._locked(_HEALTH_LOCK, shared=False):
            rows = tuple(self._read(i) for i in range(self.count))
            new_row, result = change(rows[index], rows)
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
        (
            up,
            since,
            window_start,
            retry_at,
            trial_at,
            window_fails,
            failures,
            successes,
            admin,
            weight,
            run_5xx,
            ejections,
            ejected_until,
            reason,
        ) = self._ROW.unpack_from(self._memory, self._HEADER.size + index * self._ROW.size)
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
            admin=admin,
            weight=weight,
            run_5xx=run_5xx,
            ejections=ejections,
            ejected_until=ejected_until,
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
            row.admin,
            min(row.weight, _U32),
            min(row.run_5xx, _U32),
            min(row.ejections, _U32),
            row.ejected_until,
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
