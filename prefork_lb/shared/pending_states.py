"""Saved states of DNS addresses that were not in the balancer when the ``state_file`` was read.

The master reads the ``state_file`` at start and on HUP. A drain, a
maintenance or a weight saved for an address DNS does not give at that
moment waits here, in memory every worker shares: the worker that publishes
DNS answers takes it when the address takes a slot (``take``), and every
worker that rewrites the file keeps the ones still waiting (``waiting``), so
a second restart does not lose them. Each waits ``runtime.PENDING_SECONDS``
from when it began to wait (kept in the file as ``waiting_since``, so a
restart does not start the wait again), then is dropped.

Written by the master before it forks, then only by the one process holding
the resolving lease (a taken row is marked with one byte): no lock.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence

from prefork_lb.runtime import PENDING_SECONDS, AdminState, SavedState


class PendingStates:
    """Up to ``capacity`` saved states waiting for their address, in shared memory."""

    # waiting, state, weight, deadline (time.monotonic(): one clock for every process),
    # since (time.time(), for the file), name
    _ROW = struct.Struct("<?BHdd56s")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._memory = mmap.mmap(-1, max(self._ROW.size * capacity, 1), flags=mmap.MAP_SHARED)

    def load(
        self, states: Sequence[SavedState], now: float, wall_now: float
    ) -> tuple[SavedState, ...]:
        """Make ``states`` the ones waiting, each until ``PENDING_SECONDS`` after its ``since``;
        return those that did not fit. ``now``: ``time.monotonic()``; ``wall_now``: ``time.time()``.
        """
        kept = [s for s in states if len(s.name.encode("ascii")) <= 56][: self.capacity]
        for row in range(self.capacity):
            if row < len(kept):
                saved = kept[row]
                deadline = now + (saved.since + PENDING_SECONDS - wall_now)
                values = (
                    True,
                    int(saved.state),
                    saved.weight,
                    deadline,
                    saved.since,
                    saved.name.encode(),
                )
            else:
                values = (False, 0, 0, 0.0, 0.0, b"")
            self._ROW.pack_into(self._memory, row * self._ROW.size, *values)
        return tuple(s for s in states if s not in kept)

    def take(self, name: str, now: float) -> SavedState | None:
        """The state waiting for the address ``name`` (None: none); it waits no more."""
        for row in range(self.capacity):
            saved = self._read(row, now)
            if saved is not None and saved.name == name:
                self._memory[row * self._ROW.size] = 0
                return saved
        return None

    def waiting(self, now: float) -> tuple[SavedState, ...]:
        """Every state still waiting for its address at ``now``."""
        found = (self._read(row, now) for row in range(self.capacity))
        return tuple(saved for saved in found if saved is not None)

    def _read(self, row: int, now: float) -> SavedState | None:
        waiting, state, weight, deadline, since, name = self._ROW.unpack_from(
            self._memory, row * self._ROW.size
        )
        if not waiting or now >= deadline:
            return None
        return SavedState(name.rstrip(b"\0").decode("ascii"), AdminState(state), weight, since)

    def close(self) -> None:
        """Release the memory (in this process only)."""
        self._memory.close()
