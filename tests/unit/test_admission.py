"""Admission rules (pure) and the shared waiting rooms: order, room, kill-safety."""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.admission import (
    WAIT_BUCKETS,
    at_limit,
    may_take_slot,
    retry_after,
    room_for_one_more,
)
from prefork_lb.shared import AdmissionTable


@pytest.mark.parametrize(
    ("waiting", "head", "ticket", "expected"),
    [
        pytest.param(0, 0, None, True, id="nobody-waits"),
        pytest.param(2, 7, None, False, id="newcomer-queues-behind"),
        pytest.param(2, 7, 7, True, id="head-takes"),
        pytest.param(2, 7, 8, False, id="second-waits"),
    ],
)
def test_may_take_slot(waiting: int, head: int, ticket: int | None, expected: bool) -> None:
    """Only the oldest waiter takes a free slot while anyone waits."""
    assert may_take_slot(waiting, head, ticket) is expected


def test_room_and_retry_after() -> None:
    """max_queue 0 is no room at all; Retry-After is the timeout, at least 1 s."""
    assert not room_for_one_more(0, 0)
    assert room_for_one_more(1023, 1024)
    assert not room_for_one_more(1024, 1024)
    assert retry_after(0.2) == 1
    assert retry_after(5) == 5
    assert retry_after(2.5) == 3


@given(
    loads=st.lists(st.integers(0, 10), min_size=1, max_size=6),
    limits=st.lists(st.integers(0, 10), min_size=6, max_size=6),
)
def test_at_limit(loads: list[int], limits: list[int]) -> None:
    """A backend is at its limit when it has one (non-zero) and holds that many or more."""
    full = at_limit(range(len(loads)), loads, limits)
    for i, load in enumerate(loads):
        assert (i in full) == (limits[i] > 0 and load >= limits[i])


def test_tickets_head_and_length() -> None:
    """Tickets count up per pool; the head is the smallest published ticket over all slots."""
    table = AdmissionTable(2)
    assert [table.ticket(0), table.ticket(0), table.ticket(1)] == [1, 2, 1]
    table.publish(3, 0, 2, 5)
    table.publish(9, 0, 1, 4)
    assert (table.waiting(0), table.head(0), table.waiting(1), table.head(1)) == (3, 4, 0, 0)
    table.publish(9, 0, 0, 4)
    assert (table.waiting(0), table.head(0)) == (2, 5)
    table.close()


def test_wait_histogram() -> None:
    """Waits land in the first bucket that holds them; the total is kept in seconds."""
    table = AdmissionTable(1)
    table.observe_wait(0, 0, 0.0005)
    table.observe_wait(1, 0, 0.3)
    table.observe_wait(1, 0, 99.0)
    counts, total = table.wait_histogram(0)
    assert counts[0] == 1
    assert counts[WAIT_BUCKETS.index(0.5)] == 1
    assert counts[-1] == 1
    assert total == pytest.approx(99.3005)
    table.close()


def test_a_killed_worker_wedges_nothing() -> None:
    """A worker SIGKILLed while it holds the admission lock and waits in a room leaves the lock
    free, and the master's release clears its place in the room."""
    table = AdmissionTable(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: wait in the room, take the lock, and die holding it
        table.publish(5, 0, 3, 11)
        with table.locked():
            os.write(write, b"x")
            signal.pause()
        os._exit(0)
    os.read(read, 1)
    assert (table.waiting(0), table.head(0)) == (3, 11)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with table.locked():  # would block for ever if the kernel kept the lock
        pass
    table.release(5)
    assert (table.waiting(0), table.head(0)) == (0, 0)
    os.close(read)
    os.close(write)
    table.close()
