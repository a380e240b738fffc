"""Extensions' shared counters and rate limiters: exact across processes, safe against kills."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from prefork_lb.shared.extension_memory import (
    ExtensionMemory,
    RateLimiter,
    RateLimiterTable,
    SharedCounter,
)
from tests.support.forking import exit_code, fork_running

PROCESSES = 4


@pytest.fixture
def made() -> Iterator[list[SharedCounter | RateLimiterTable | ExtensionMemory]]:
    """What a test makes, closed after it."""
    things: list[SharedCounter | RateLimiterTable | ExtensionMemory] = []
    yield things
    for thing in things:
        thing.close()


def counter(made: list[Any], name: str = "c") -> SharedCounter:
    """A new counter, closed after the test."""
    made.append(SharedCounter(name))
    return made[-1]  # type: ignore[no-any-return]


def table(made: list[Any], keys: int = RateLimiterTable.KEYS) -> RateLimiterTable:
    """A new rate-limiter table, closed after the test."""
    made.append(RateLimiterTable("r", keys=keys))
    return made[-1]  # type: ignore[no-any-return]


def test_a_shared_counter_adds_and_reads(made: list[Any]) -> None:
    """add() returns the new value; value reads it; add(-n) may go down to 0, not below."""
    shared = counter(made)
    assert shared.add() == 1
    assert shared.add(5) == 6
    assert shared.add(-6) == 0
    with pytest.raises(ValueError, match="below 0"):
        shared.add(-1)
    assert shared.value == 0


def test_a_shared_counter_is_exact_across_forked_processes(made: list[Any]) -> None:
    """Four processes adding 5,000 times each leave exactly 20,000."""
    shared = counter(made)

    def add_many() -> None:
        for _ in range(5000):
            shared.add()

    pids = [fork_running(add_many) for _ in range(PROCESSES)]
    assert [exit_code(pid) for pid in pids] == [0] * PROCESSES
    assert shared.value == 5000 * PROCESSES


def test_a_rate_limiter_is_exact_across_forked_processes(made: list[Any]) -> None:
    """At one instant, four processes taking 50 times each get exactly ``burst`` tokens in all."""
    buckets = table(made)
    allowed = counter(made, "allowed")

    def take_many() -> None:
        limiter = RateLimiter(buckets, rate=1, burst=37)
        for _ in range(50):
            if limiter.take("client", now=1000.0).allowed:
                allowed.add()

    pids = [fork_running(take_many) for _ in range(PROCESSES)]
    assert [exit_code(pid) for pid in pids] == [0] * PROCESSES
    assert allowed.value == 37


def test_keys_have_their_own_buckets(made: list[Any]) -> None:
    """Emptying one key's bucket leaves another key's full."""
    limiter = RateLimiter(table(made), rate=1, burst=1)
    assert limiter.take("a", now=5.0).allowed
    assert not limiter.take("a", now=5.0).allowed
    assert limiter.take("b", now=5.0).allowed


def test_a_full_table_forgets_the_key_seen_longest_ago(made: list[Any]) -> None:
    """With every slot of a set busy, a new key takes the slot of the one seen longest ago."""
    limiter = RateLimiter(table(made, RateLimiterTable.WAYS), rate=0.001, burst=1)
    for i in range(RateLimiterTable.WAYS):
        assert limiter.take(f"k{i}", now=float(i)).allowed
    assert limiter.take("new", now=100.0).allowed
    assert limiter.take("k0", now=101.0).allowed  # forgotten: a full bucket again
    assert not limiter.take("k7", now=102.0).allowed


def test_a_torn_slot_reads_as_a_full_bucket(made: list[Any]) -> None:
    """A slot whose CRC does not match (a writer killed mid-write) counts as a key never seen."""
    buckets = table(made, RateLimiterTable.WAYS)
    limiter = RateLimiter(buckets, rate=0.001, burst=1)
    assert limiter.take("a", now=1.0).allowed
    assert not limiter.take("a", now=1.0).allowed
    memory = buckets._memory
    for offset in range(0, len(memory), 32):
        if memory[offset : offset + 8] != bytes(8):
            memory[offset + 8 : offset + 16] = b"\xff" * 8
    assert limiter.take("a", now=1.0).allowed


def test_a_process_killed_holding_a_set_lock_wedges_no_one(made: list[Any]) -> None:
    """A child SIGKILLed holding the one set's lock loses it; the parent then takes a token."""
    buckets = table(made, RateLimiterTable.WAYS)
    ready_read, ready_write = os.pipe()

    def hold_and_wait() -> None:
        fcntl.lockf(buckets._lock_fd, fcntl.LOCK_EX, 1, 0)
        os.write(ready_write, b"x")
        signal.pause()

    pid = fork_running(hold_and_wait)
    os.read(ready_read, 1)
    os.kill(pid, signal.SIGKILL)
    assert exit_code(pid) == -signal.SIGKILL
    os.close(ready_read)
    os.close(ready_write)
    limiter = RateLimiter(buckets, rate=1, burst=1)
    assert limiter.take("a", now=1.0).allowed


def test_declare_makes_what_is_missing_and_keeps_the_rest(made: list[Any]) -> None:
    """A second declare (a reload) keeps the counters and limiters already made."""
    memory = ExtensionMemory()
    made.append(memory)
    memory.declare(counters=["c"], limiters=["r"], extensions=["m:E"])
    shared, limiter = memory.counters["c"], memory.limiters["r"]
    shared.add(3)
    memory.declare(counters=["c", "d"], limiters=["r"], extensions=["m:E", "m:F"])
    assert memory.counters["c"] is shared
    assert memory.counters["c"].value == 3
    assert memory.limiters["r"] is limiter
    assert set(memory.counters) == {"c", "d"}
    assert ("m:F", "on_complete") in memory.errors
