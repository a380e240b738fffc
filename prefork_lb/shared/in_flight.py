"""Requests in flight to each backend, open client connections and tunnels, counted per worker.

These counts need no lock at all: each worker writes only its own row, and
the master clears a dead worker's row.
"""

from __future__ import annotations

import mmap


class InFlightTable:
    """Requests in flight to each backend, open client connections and tunnels: one writer per row.

    Each worker slot has a cell per backend, one for the client connections
    the worker holds open (one greenlet each), and a cell per backend for its
    open tunnels (which are in flight too). A worker only ever
    changes its own cells, so no lock is needed; readers sum them. The master
    hands out slots before it forks a worker and clears a slot when the
    worker exits, so a killed worker's counts do not linger.
    """

    SLOTS = 128

    def __init__(self, count: int) -> None:
        self.count = count
        # A row per backend, one for client connections, then a row per backend's tunnels.
        self._rows = 2 * count + 1
        self._memory = mmap.mmap(-1, 8 * self.SLOTS * self._rows, flags=mmap.MAP_SHARED)
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
        for row in range(self._rows):
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

    def add_tunnel(self, slot: int, backend: int, delta: int) -> None:
        """In a worker: a tunnel to one backend opened (1) or ended (-1)."""
        self._cells[(self.count + 1 + backend) * self.SLOTS + slot] += delta

    def tunnels(self) -> list[int]:
        """The open tunnels of every backend, summed over all workers."""
        slots, first = self.SLOTS, self.count + 1
        return [
            sum(self._cells[(first + b) * slots : (first + b + 1) * slots])
            for b in range(self.count)
        ]

    def close(self) -> None:
        """Release the memory (in this process only)."""
        self._cells.release()
        self._memory.close()
