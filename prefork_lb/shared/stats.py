"""What every worker did, per backend: responses, errors, retries, latency, tunnels.

One row per worker slot, one writer each, summed by readers; a retired row
keeps the counts of workers that have exited, so totals never go backwards.
"""

from __future__ import annotations

import bisect
import mmap
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prefork_lb.shared.in_flight import InFlightTable

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
    tunnels: int  # tunnels opened (101s relayed)
    tunnel_up: int  # tunnel bytes from clients to the backend
    tunnel_down: int  # tunnel bytes from the backend to clients
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
        self._tunnels = self._retries + 1
        self._tunnel_up = self._tunnels + 1
        self._tunnel_down = self._tunnels + 2
        self._errors = self._tunnels + 3
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

    def count_tunnel(self, slot: int, column: int) -> None:
        """A tunnel to this backend opened (its 101 went to the client)."""
        self._cells[1 + (slot * self.columns + column) * self._width + self._tunnels] += 1

    def count_tunnel_bytes(self, slot: int, column: int, *, up: bool, count: int) -> None:
        """A tunnel to this backend relayed ``count`` bytes: to it (``up``) or from it."""
        field = self._tunnel_up if up else self._tunnel_down
        self._cells[1 + (slot * self.columns + column) * self._width + field] += count

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
            tunnels=cells[self._tunnels],
            tunnel_up=cells[self._tunnel_up],
            tunnel_down=cells[self._tunnel_down],
            errors=tuple(cells[self._errors : self._buckets]),
            latency_buckets=tuple(cells[self._buckets :]),
            latency_sum=latency_sum,
        )

    # In the process publishing DNS addresses.

    def clear_column(self, column: int) -> None:
        """Start a column anew in every row: its slot holds a new address.

        Nothing is in flight to it (the slot was empty), so no worker writes
        there meanwhile.
        """
        width = self._width
        zeros = _zeros(width)
        for row in range(self.SLOTS + 1):
            start = 1 + row * self._row_cells + column * width
            self._cells[start : start + width] = zeros
            self._sums[row * self.columns + column] = 0.0

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
