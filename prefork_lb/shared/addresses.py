"""The addresses DNS gave, in slots every worker reads, and the resolving lease.

One row per backend index (only the DNS slots' rows are used: a slot's
index is its backend's, so nothing needs translating), written by one
process at a time: the master before it forks, then the worker holding the
resolving lease. Writes and reads of the rows go under a POSIX record lock
that the kernel drops when its holder dies; a generation number, bumped by
every publish, lets readers re-read only when something changed (one integer
compare per request).

Each DNS source also has a row of figures for the metrics: failures by
reason, the addresses it holds and when it was last resolved. And each pool
that hashes over DNS addresses has its Maglev table here, written with the
slots it was built from (same lock, same generation): built once per
answer by the publisher instead of once in every worker.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import mmap
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prefork_lb.maglev import TABLE_SIZE
from prefork_lb.shared.counter import shm_dir
from prefork_lb.shared.health_table import ProberLease
from prefork_lb.slots import EMPTY, Slot, SlotState

# Why a resolution failed, as the metrics label it (``resolver.DnsFailure`` reasons).
DNS_FAILURE_REASONS = ("nxdomain", "timeout", "empty", "servfail", "refused", "error")


@dataclass(frozen=True, slots=True)
class DnsFigures:
    """One DNS source's figures: failures so far by reason, addresses held, last success."""

    failures: Mapping[str, int]
    addresses: int
    last_resolved: float  # wall-clock time of the last good answer; 0: none yet


class AddressTable:
    """Slots (one row per backend index) and per-source figures, in shared memory."""

    _HEADER = struct.Struct("<Q")
    _ROW = struct.Struct("<BHH?46s")  # state, port, weight, backup, ip
    _GROUP = struct.Struct(f"<{len(DNS_FAILURE_REASONS)}QId")
    _RING = struct.Struct("<I")  # entries in the table; 0: no table (no member)
    _RING_BYTES = _RING.size + 4 * TABLE_SIZE

    def __init__(self, count: int, groups: int, rings: int = 0) -> None:
        """``count`` slots (all EMPTY), ``groups`` sources' figures and ``rings`` hash tables."""
        self.count = count
        self.groups = groups
        self.rings = rings
        self._rows_at = self._HEADER.size
        self._groups_at = self._rows_at + self._ROW.size * count
        self._rings_at = self._groups_at + self._GROUP.size * groups
        size = self._rings_at + self._RING_BYTES * rings
        self._memory = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_SHARED)
        # Its own file: record locks belong to a process and a file.
        self._lock_file = tempfile.TemporaryFile(prefix="prefork_lb-dns-", dir=shm_dir())  # noqa: SIM115
        self._lock_fd = self._lock_file.fileno()
        # The right to resolve: the one process holding it runs the resolvers.
        self.lease = ProberLease()

    def generation(self) -> int:
        """A number that changes whenever a slot changes."""
        return int(self._HEADER.unpack_from(self._memory, 0)[0])

    def snapshot(self) -> tuple[int, tuple[Slot, ...]]:
        """The generation and every slot, read consistently."""
        with self._locked(shared=True):
            return self.generation(), tuple(self._read(i) for i in range(self.count))

    def publish(
        self, changes: Mapping[int, Slot], rings: Mapping[int, Sequence[int] | None] | None = None
    ) -> None:
        """Write the changed slots and the hash tables built from them, at once for every reader.

        ``rings``: table number -> its entries (backend indexes), None for no table.
        """
        if not changes and not rings:
            return
        with self._locked(shared=False):
            for index, slot in changes.items():
                self._write(index, slot)
            for number, entries in (rings or {}).items():
                self._write_ring(number, entries)
            self._HEADER.pack_into(self._memory, 0, self.generation() + 1)

    def ring(self, number: int) -> tuple[int, ...] | None:
        """Hash table ``number``'s entries as last published (None: no table)."""
        at = self._ring_at(number)
        with self._locked(shared=True):
            (size,) = self._RING.unpack_from(self._memory, at)
            if not size:
                return None
            start = at + self._RING.size
            with memoryview(self._memory)[start : start + 4 * size] as raw, raw.cast("I") as view:
                return tuple(view)

    def _write_ring(self, number: int, entries: Sequence[int] | None) -> None:
        at = self._ring_at(number)
        size = len(entries) if entries else 0
        self._RING.pack_into(self._memory, at, size)
        if entries:
            start = at + self._RING.size
            with memoryview(self._memory)[start : start + 4 * size] as raw, raw.cast("I") as view:
                view[:] = array.array("I", entries)

    def _ring_at(self, number: int) -> int:
        if not 0 <= number < self.rings:
            raise IndexError(number)
        return self._rings_at + number * self._RING_BYTES

    def count_failure(self, group: int, reason: str) -> None:
        """A resolution of source ``group`` failed for ``reason`` (one of the reasons)."""
        figures = list(self._GROUP.unpack_from(self._memory, self._group_at(group)))
        which = DNS_FAILURE_REASONS.index(reason) if reason in DNS_FAILURE_REASONS else -1
        figures[which if which >= 0 else DNS_FAILURE_REASONS.index("error")] += 1
        self._GROUP.pack_into(self._memory, self._group_at(group), *figures)

    def resolved(self, group: int, addresses: int, wall_now: float) -> None:
        """Source ``group`` was resolved at ``wall_now`` and now holds ``addresses``."""
        figures = list(self._GROUP.unpack_from(self._memory, self._group_at(group)))
        figures[-2:] = [addresses, wall_now]
        self._GROUP.pack_into(self._memory, self._group_at(group), *figures)

    def figures(self, group: int) -> DnsFigures:
        """Source ``group``'s figures as they are now."""
        *failures, addresses, last = self._GROUP.unpack_from(self._memory, self._group_at(group))
        return DnsFigures(dict(zip(DNS_FAILURE_REASONS, failures, strict=True)), addresses, last)

    def try_lease(self) -> bool:
        """Take the resolving lease if no other process holds it (kept until exit)."""
        return self.lease.try_take()

    def _group_at(self, group: int) -> int:
        if not 0 <= group < self.groups:
            raise IndexError(group)
        return self._groups_at + group * self._GROUP.size

    @contextlib.contextmanager
    def _locked(self, *, shared: bool) -> Iterator[None]:
        fcntl.lockf(self._lock_fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, 0)

    def _read(self, index: int) -> Slot:
        state, port, weight, backup, ip = self._ROW.unpack_from(
            self._memory, self._rows_at + index * self._ROW.size
        )
        if state == SlotState.EMPTY:
            return EMPTY
        return Slot(SlotState(state), ip.rstrip(b"\0").decode("ascii"), port, weight, backup)

    def _write(self, index: int, slot: Slot) -> None:
        self._ROW.pack_into(
            self._memory,
            self._rows_at + index * self._ROW.size,
            int(slot.state),
            slot.port,
            min(slot.weight, 65535),
            slot.backup,
            slot.ip.encode("ascii"),
        )

    def close(self) -> None:
        """Release the memory, the lock file and the lease (in this process only)."""
        self._memory.close()
        self._lock_file.close()
        self.lease.close()
