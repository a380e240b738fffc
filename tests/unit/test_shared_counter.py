"""The shared rotation counter, across real forked processes."""

from __future__ import annotations

import os
import signal
import time
from array import array
from collections.abc import Iterator

import pytest

from prefork_lb.shared import RotationCounter
from tests.support.forking import exit_code

CHILDREN = 4
PER_CHILD = 5_000
# Several rounds, so that a race which only sometimes loses an update is still caught.
ROUNDS = 40


@pytest.fixture
def counter() -> Iterator[RotationCounter]:
    rotation = RotationCounter()
    yield rotation
    rotation.close()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_sequential_next() -> None:
    """A fresh counter hands out 0, 1, 2, ... one call at a time."""
    rotation = RotationCounter()
    try:
        assert [rotation.next() for _ in range(5)] == [0, 1, 2, 3, 4]
    finally:
        rotation.close()


def test_peek_does_not_advance(counter: RotationCounter) -> None:
    """peek() reports the next position without taking it."""
    assert counter.peek() == 0
    counter.next()
    counter.next()
    counter.next()
    assert counter.peek() == 3
    assert counter.peek() == 3
    assert counter.next() == 3
    assert counter.peek() == 4


def test_counters_are_independent() -> None:
    """Two counters in one process do not share a position."""
    first, second = RotationCounter(), RotationCounter()
    try:
        first.next()
        first.next()
        assert second.next() == 0
        assert first.next() == 2
    finally:
        first.close()
        second.close()


def _child_draws(rotation: RotationCounter, go: int, out: int) -> None:
    """In a forked child: wait for the start signal, draw PER_CHILD positions, write them, exit."""
    code = 1
    try:
        os.read(go, 1)
        values = array("q", (rotation.next() for _ in range(PER_CHILD)))
        os.write(out, values.tobytes())
        code = 0
    finally:
        os._exit(code)


def _draw_in_children(rotation: RotationCounter) -> list[list[int]]:
    """Fork CHILDREN processes that draw at the same time; return each one's draws, in order."""
    go_read, go_write = os.pipe()
    children: list[tuple[int, int]] = []
    for _ in range(CHILDREN):
        out_read, out_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child_draws(rotation, go_read, out_write)
        os.close(out_write)
        children.append((pid, out_read))
    os.close(go_read)
    # Release all children at once so that their draws interleave.
    os.write(go_write, b"g" * CHILDREN)
    os.close(go_write)
    draws = []
    codes = []
    for pid, out_read in children:
        values = array("q")
        values.frombytes(_read_all(out_read))
        codes.append(exit_code(pid))
        draws.append(values.tolist())
    assert codes == [0] * CHILDREN
    return draws


def test_forked_child_advances_the_parent_counter(counter: RotationCounter) -> None:
    """A child forked after the counter is made advances the same position the parent sees."""
    assert counter.next() == 0
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(100):
                counter.next()
        finally:
            os._exit(0)
    assert exit_code(pid) == 0
    assert counter.peek() == 101
    assert counter.next() == 101


@pytest.mark.timeout(60)
def test_forked_processes_share_one_rotation() -> None:
    """Processes drawing at once get distinct positions that together are exactly 0..N-1."""
    for _ in range(ROUNDS):
        rotation = RotationCounter()
        try:
            draws = _draw_in_children(rotation)
            total = rotation.peek()
        finally:
            rotation.close()
        for values in draws:
            assert len(values) == PER_CHILD
            assert values == sorted(values)  # each process sees its own draws increase
        drawn = [value for values in draws for value in values]
        assert len(set(drawn)) == len(drawn)
        assert sorted(drawn) == list(range(CHILDREN * PER_CHILD))
        assert total == CHILDREN * PER_CHILD


def _child_spins(rotation: RotationCounter, ready: int) -> None:
    """In a forked child: say it has started, then draw positions until killed."""
    try:
        rotation.next()
        os.write(ready, b"r")
        while True:
            rotation.next()
    finally:
        os._exit(1)


@pytest.mark.timeout(60)
def test_killed_process_never_wedges_the_counter(counter: RotationCounter) -> None:
    """A process SIGKILLed while drawing leaves the counter usable and its values unique."""
    seen: list[int] = []
    for delay in (0.0, 0.001, 0.005, 0.01, 0.02, 0.05):
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child_spins(counter, ready_write)
        os.close(ready_write)
        assert os.read(ready_read, 1) == b"r"
        os.close(ready_read)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        assert exit_code(pid) == -signal.SIGKILL

        before = counter.peek()
        started = time.monotonic()
        first = counter.next()
        second = counter.next()
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        assert first == before
        assert second == before + 1
        assert not seen or first > seen[-1]
        seen.extend((first, second))
    assert len(set(seen)) == len(seen)
