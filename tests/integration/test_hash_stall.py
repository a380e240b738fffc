"""The worker holding the DNS lease keeps serving while it rebuilds a hash pool's table.

In this process, under gevent: the real ``DnsFollower`` over real shared
memory, asking the test DNS server, for a pool that hashes over 32 A
records. A greenlet that ticks every 2 ms stands for the requests the
worker serves: how long it waits between ticks is how long a request would.
The waits are measured in this thread's CPU time (``time.thread_time``),
which a loaded machine does not stretch: only work done in this thread, by
other greenlets, counts. The bound is a share of one table's build, measured
here too, so a slower machine moves both alike. And a publish shows nothing
of its change while it builds: the slots, fresh health rows and tables
appear together.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from prefork_lb import shared
from prefork_lb.config import load_config
from prefork_lb.dns import Address
from prefork_lb.dns_follower import DnsFollower
from prefork_lb.dns_publish import active_addresses, publish, resolve_at_start
from prefork_lb.health import BackendHealth
from prefork_lb.maglev import maglev_table
from prefork_lb.shared import handover
from tests.support.dns_server import DnsServer, dns_server

NAME = "hashed.test"
ADDRESSES = 32
IPS = [f"10.9.0.{i}" for i in range(1, ADDRESSES + 4)]
CHANGES = 3


@pytest.fixture
def server() -> Iterator[DnsServer]:
    """The DNS server, with the first 32 addresses under the name."""
    with dns_server() as started:
        started.set_a(NAME, IPS[:ADDRESSES], ttl=1)
        yield started


@pytest.fixture
def state(server: DnsServer, tmp_path: Path) -> Iterator[shared.SharedState]:
    """Shared state as the master installs it, the name resolved once (as before a fork)."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'dns_resolver = "{server.resolver_setting}"\n'
        f'dns = "{NAME}:8080"\n'
        f"dns_slots = {ADDRESSES + 2}\n"
        "dns_timeout = 0.5\n"
        'policy = "hash"\n'
        'hash_key = "header:X-User"\n'
    )
    settings = load_config({"PREFORK_LB_CONFIG": str(config)})
    installed = shared.install(settings, resolve_at_start(settings, logging.getLogger("test")))
    yield installed
    installed.close()
    handover._installed = None


def _one_build_cpu_seconds() -> float:
    """The CPU time of one table build over as many addresses, in this thread."""
    started = time.thread_time()
    maglev_table([f"http://10.8.0.{i}:8080" for i in range(ADDRESSES)], [1] * ADDRESSES)
    return time.thread_time() - started


def _next_table(state: shared.SharedState, last: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Wait (letting other greenlets run) until a table other than ``last`` is published."""
    deadline = time.monotonic() + 10
    seen = state.addresses.generation()
    while time.monotonic() < deadline:
        gevent.sleep(0.01)
        if state.addresses.generation() != seen:
            # Read only when something was published: reading costs CPU the ticker would see.
            seen = state.addresses.generation()
            table = state.addresses.ring(0)
            if table != last:
                return table
    raise AssertionError("no new table within 10 s")


def test_the_lease_holder_runs_other_greenlets_while_it_builds_a_table(
    server: DnsServer, state: shared.SharedState
) -> None:
    """While a hash pool's records change (a new table each time), a greenlet ticking every
    2 ms never waits more than half of one table's build (in CPU time)."""
    build = _one_build_cpu_seconds()
    waits: list[float] = []

    def tick() -> None:
        last = time.thread_time()
        while True:
            gevent.sleep(0.002)
            now = time.thread_time()
            waits.append(now - last)
            last = now

    tables = [state.addresses.ring(0)]
    gc.disable()  # a collection's pause is not the build's
    ticker = gevent.spawn(tick)
    follower = DnsFollower(state).start()
    assert follower is not None
    try:
        for change in range(1, CHANGES + 1):
            server.set_a(NAME, IPS[change : change + ADDRESSES], ttl=1)
            tables.append(_next_table(state, tables[-1]))
    finally:
        follower.kill()
        ticker.kill()
        gc.enable()
    assert len(set(tables)) == CHANGES + 1
    assert max(waits) < build / 2, (max(waits), build, sorted(waits)[-5:])


def test_nothing_of_a_change_shows_while_its_tables_are_built(state: shared.SharedState) -> None:
    """Between the steps of a publish's build, neither its slots nor the fresh health rows of
    its new addresses are visible yet; after it, both are, with the table."""
    group = state.settings.dns_groups[0]
    _, slots = state.addresses.snapshot()
    addresses = [*active_addresses(slots)[1:], Address("10.9.0.99", 8080, 1, False)]
    generation = state.addresses.generation()
    _, rows = state.health.snapshot()
    seen: list[tuple[int, tuple[BackendHealth, ...]]] = []

    def between_steps() -> None:
        seen.append((state.addresses.generation(), state.health.snapshot()[1]))

    result = publish(state, group, addresses, time.monotonic(), between_steps)
    fresh = [group.first + number for number in result.fresh]
    assert fresh
    assert len(seen) > 10
    for generation_then, rows_then in seen:
        assert generation_then == generation
        assert [rows_then[i] for i in fresh] == [rows[i] for i in fresh]
    assert state.addresses.generation() != generation
    assert all(state.health.snapshot()[1][i].reason == "found through DNS" for i in fresh)
