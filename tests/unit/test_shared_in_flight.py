"""The shared in-flight rows and client connection counts, across real forked processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefork_lb.shared import InFlightTable
from tests.support.forking import exit_code, fork_running


@pytest.fixture
def in_flight() -> Iterator[InFlightTable]:
    counts = InFlightTable(2)
    yield counts
    counts.close()


def test_in_flight_rows_sum_over_workers(in_flight: InFlightTable) -> None:
    """Each worker counts in its own row; the totals add every row up."""
    first, second = in_flight.claim(), in_flight.claim()
    assert first is not None
    assert second is not None
    assert first != second

    def busy() -> None:
        in_flight.add(first, 0, 1)
        in_flight.add(first, 0, 1)
        in_flight.add(first, 1, 1)

    assert exit_code(fork_running(busy)) == 0
    in_flight.add(second, 0, 1)
    in_flight.add(second, 0, 1)
    in_flight.add(second, 0, -1)
    assert in_flight.totals() == [3, 1]


def test_releasing_a_dead_workers_slot_forgets_its_requests(in_flight: InFlightTable) -> None:
    """When the master releases a killed worker's slot, its in-flight requests no longer count."""
    dead, alive = in_flight.claim(), in_flight.claim()
    assert dead is not None
    assert alive is not None
    in_flight.add(dead, 0, 5)
    in_flight.add(alive, 0, 2)
    in_flight.release(dead)
    assert in_flight.totals() == [2, 0]
    assert in_flight.claim() == dead


def test_client_connections_sum_over_workers_and_leave_with_a_dead_one(
    in_flight: InFlightTable,
) -> None:
    """Client connections are counted per slot, apart from in-flight requests."""
    dead, alive = in_flight.claim(), in_flight.claim()
    assert dead is not None
    assert alive is not None

    def connected() -> None:
        in_flight.add_connection(dead, 1)
        in_flight.add_connection(dead, 1)

    assert exit_code(fork_running(connected)) == 0
    in_flight.add_connection(alive, 1)
    in_flight.add_connection(alive, 1)
    in_flight.add_connection(alive, -1)
    assert (in_flight.connections(), in_flight.totals()) == (3, [0, 0])
    in_flight.release(dead)
    assert in_flight.connections() == 1


def test_slots_run_out(in_flight: InFlightTable) -> None:
    """There are SLOTS slots; after that claim() says so with None instead of sharing one."""
    slots = [in_flight.claim() for _ in range(InFlightTable.SLOTS)]
    assert sorted(slots) == list(range(InFlightTable.SLOTS))  # type: ignore[type-var]
    assert in_flight.claim() is None
