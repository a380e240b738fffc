"""The shared health table and prober lease, across real forked processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from prefork_lb.health import BackendHealth
from prefork_lb.shared import HealthTable
from tests.support.forking import exit_code, fork_running

CHILDREN = 4
UPDATES = 300


@pytest.fixture
def table() -> Iterator[HealthTable]:
    health = HealthTable(3)
    yield health
    health.close()


def _count_failure(row: BackendHealth) -> tuple[BackendHealth, None]:
    return replace(row, failures=row.failures + 1), None


def test_rows_start_up(table: HealthTable) -> None:
    """Every backend starts up, with nothing counted against it."""
    generation, rows = table.snapshot()
    assert generation == 0
    assert rows == (BackendHealth(),) * 3


def test_update_round_trips_every_field(table: HealthTable) -> None:
    """What an update writes is what a snapshot reads back, and the generation moves."""
    written = BackendHealth(
        up=False,
        since=12.5,
        reason="down: 3 failures in 10 s (connection refused)",
        window_start=10.25,
        window_fails=3,
        retry_at=22.5,
        failures=7,
        successes=0,
        admin=2,
        weight=700,
        run_5xx=4,
        ejections=3,
        ejected_until=99.5,
    )
    result = table.update(1, lambda row: (written, "done"))
    assert result == "done"
    generation, rows = table.snapshot()
    assert generation == 1
    assert rows == (BackendHealth(), written, BackendHealth())


def test_long_reasons_are_cut_not_refused(table: HealthTable) -> None:
    """A reason longer than the row's room is stored cut short (UTF-8 kept readable)."""
    table.update(0, lambda row: (replace(row, reason="é" * 100), None))
    reason = table.snapshot()[1][0].reason
    assert reason.startswith("é" * 31)
    assert len(reason.encode()) <= 64


def test_updates_from_many_processes_are_not_lost(table: HealthTable) -> None:
    """Read-modify-writes from processes racing each other all land."""

    def hammer() -> None:
        for _ in range(UPDATES):
            table.update(2, _count_failure)

    pids = [fork_running(hammer) for _ in range(CHILDREN)]
    assert [exit_code(pid) for pid in pids] == [0] * CHILDREN
    generation, rows = table.snapshot()
    assert rows[2].failures == CHILDREN * UPDATES
    assert generation == CHILDREN * UPDATES


@pytest.mark.timeout(30)
def test_a_worker_killed_holding_the_lock_does_not_wedge_the_table(table: HealthTable) -> None:
    """The kernel drops the lock of a process killed in the middle of an update."""
    ready_read, ready_write = os.pipe()

    def die_holding_the_lock() -> None:
        def stall(row: BackendHealth) -> tuple[BackendHealth, None]:
            os.write(ready_write, b"r")
            time.sleep(60)
            return row, None

        table.update(0, stall)

    pid = fork_running(die_holding_the_lock)
    assert os.read(ready_read, 1) == b"r"
    os.kill(pid, signal.SIGKILL)
    assert exit_code(pid) == -signal.SIGKILL
    started = time.monotonic()
    table.update(0, _count_failure)
    assert time.monotonic() - started < 5
    assert table.snapshot()[1][0].failures == 1


@pytest.mark.timeout(30)
def test_one_prober_lease_until_its_holder_dies(table: HealthTable) -> None:
    """Only one process holds the prober lease; when it is killed another can take it."""
    ready_read, ready_write = os.pipe()

    def hold_the_lease() -> None:
        assert table.try_lease()
        os.write(ready_write, b"r")
        time.sleep(60)

    holder = fork_running(hold_the_lease)
    assert os.read(ready_read, 1) == b"r"

    def try_it() -> None:
        os._exit(0 if table.try_lease() else 3)

    assert exit_code(fork_running(try_it)) == 3
    os.kill(holder, signal.SIGKILL)
    assert exit_code(holder) == -signal.SIGKILL
    assert exit_code(fork_running(try_it)) == 0


def test_update_seeing_gives_every_row_under_the_lock(table: HealthTable) -> None:
    """update_seeing hands the change every row as it is, and writes only its own."""
    table.update(0, lambda row: (BackendHealth(ejected_until=5.0), None))
    seen = table.update_seeing(
        2, lambda row, rows: (BackendHealth(run_5xx=len(rows)), rows[0].ejected_until)
    )
    assert seen == 5.0
    assert table.snapshot()[1][2].run_5xx == 3
