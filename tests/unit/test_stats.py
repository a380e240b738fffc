"""The shared stats table: summed across forked workers, kept when workers exit or reload."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from prefork_lb import shared
from prefork_lb.config import Settings, parse_backend_url
from prefork_lb.errors import ERROR_KINDS
from prefork_lb.shared import LATENCY_BUCKETS, BackendStats, StatsTable
from tests.support.forking import exit_code, fork_running

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"
UNREACHABLE = ERROR_KINDS.index("BackendUnreachable")
NO_BACKEND = ERROR_KINDS.index("NoBackendAvailable")
TWO_XX = 1


@pytest.fixture
def stats() -> Iterator[StatsTable]:
    table = StatsTable(2, len(ERROR_KINDS))
    yield table
    table.close()


def _settings(*urls: str) -> Settings:
    return Settings(backends=tuple(parse_backend_url("test", url) for url in urls))


def _serve(table: StatsTable, slot: int, column: int, requests: int) -> None:
    """What a worker counts for ``requests`` answered GETs of 20 ms each."""
    for _ in range(requests):
        table.observe_latency(slot, column, 0.02)
        table.count_response(slot, column, 200)


def test_rows_sum_over_forked_workers(stats: StatsTable) -> None:
    """What each worker process counts in its own row, a reader sees summed."""
    assert exit_code(fork_running(lambda: _serve(stats, 0, 0, 300))) == 0
    assert exit_code(fork_running(lambda: _serve(stats, 1, 0, 200))) == 0
    _serve(stats, 2, 1, 5)
    stats.count_response(2, 1, 404)
    stats.count_error(2, 1, UNREACHABLE)
    stats.count_retry(2, 1)
    stats.count_error(3, stats.count, NO_BACKEND)
    stats.count_response(3, stats.count, 503)
    first, second, balancer = stats.totals()
    assert first.responses == (0, 500, 0, 0, 0)
    assert sum(first.latency_buckets) == 500
    assert first.latency_buckets[LATENCY_BUCKETS.index(0.025)] == 500
    assert first.latency_sum == pytest.approx(10.0)
    assert second.responses == (0, 5, 0, 1, 0)
    assert (second.retries, second.errors[UNREACHABLE]) == (1, 1)
    assert balancer.responses == (0, 0, 0, 0, 1)
    assert balancer.errors[NO_BACKEND] == 1


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        pytest.param(0.0, 0, id="zero"),
        pytest.param(0.005, 0, id="on-a-bound"),
        pytest.param(0.0051, 1, id="just-above-a-bound"),
        pytest.param(10.0, len(LATENCY_BUCKETS) - 1, id="last-bound"),
        pytest.param(60.0, len(LATENCY_BUCKETS), id="inf"),
    ],
)
def test_latency_bucket(stats: StatsTable, seconds: float, bucket: int) -> None:
    """A latency goes to the first bucket whose upper bound it does not exceed."""
    stats.observe_latency(0, 0, seconds)
    counts = stats.totals()[0].latency_buckets
    assert counts[bucket] == 1
    assert sum(counts) == 1


def test_a_dead_workers_counts_are_kept(stats: StatsTable) -> None:
    """When a worker's slot is released its counts move to the retired row: totals stay."""
    assert exit_code(fork_running(lambda: _serve(stats, 0, 0, 7))) == 0
    _serve(stats, 1, 0, 3)
    before = stats.totals()
    stats.release(0)
    assert stats.totals() == before
    assert stats.row(0)[0] == [0] * len(stats.row(0)[0])
    # A new worker in the same slot.
    assert exit_code(fork_running(lambda: _serve(stats, 0, 0, 1))) == 0
    assert stats.totals()[0].responses[TWO_XX] == 11


def test_totals_never_decrease_while_workers_are_released(stats: StatsTable) -> None:
    """A reader that sums while the master folds rows never sees a total go down."""
    for slot in range(20):
        _serve(stats, slot, 0, 10)
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(stats.totals()[0].responses[TWO_XX])

    reader = threading.Thread(target=read)
    reader.start()
    for slot in range(20):
        stats.release(slot)
    done.set()
    reader.join()
    assert seen == [200] * len(seen)


def _total(stats: list[BackendStats]) -> list[int]:
    return [column.responses[TWO_XX] for column in stats]


def test_reload_carries_totals_by_url(empty_slot: None) -> None:
    """A reload keeps every listed backend's totals wherever it moved; a new one starts at 0."""
    old = shared.install(_settings(A, B))
    dead = shared.assign_worker_slot()
    draining = shared.assign_worker_slot()
    assert dead is not None
    assert draining is not None
    _serve(old.stats, dead, 0, 4)
    _serve(old.stats, draining, 1, 2)
    old.stats.count_error(draining, old.stats.count, NO_BACKEND)
    shared.release_worker_slot(dead)
    new = shared.reinstall(_settings(C, B, A))
    assert _total(new.stats.totals()) == [0, 2, 4, 0]
    assert new.stats.totals()[3].errors[NO_BACKEND] == 1
    # The old worker goes on counting until it exits; then that joins the totals.
    _serve(old.stats, draining, 1, 3)
    shared.release_worker_slot(draining)
    assert _total(new.stats.totals()) == [0, 5, 4, 0]


def test_a_worker_that_spans_two_reloads_is_counted_once(empty_slot: None) -> None:
    """A worker forked before two reloads is counted once for everything it did."""
    first = shared.install(_settings(A))
    slot = shared.assign_worker_slot()
    assert slot is not None
    _serve(first.stats, slot, 0, 2)
    shared.reinstall(_settings(A, B))
    _serve(first.stats, slot, 0, 1)
    third = shared.reinstall(_settings(B, A))
    _serve(first.stats, slot, 0, 1)
    shared.release_worker_slot(slot)
    assert _total(third.stats.totals()) == [0, 4, 0]


def test_clearing_a_column_starts_it_anew_in_every_row(stats: StatsTable) -> None:
    """A column cleared for a slot's new address is zero in every row; the others are kept."""
    stats.count_response(0, 1, 200)
    stats.count_response(1, 1, 500)
    stats.observe_latency(1, 1, 0.2)
    stats.count_response(0, 0, 200)
    stats.release(1)  # in the retired row now
    stats.clear_column(1)
    first, second, own = stats.totals()
    assert (first.responses[1], second.responses, second.latency_sum) == (1, (0,) * 5, 0.0)
    assert sum(second.latency_buckets) == 0
    assert own.responses == (0,) * 5
