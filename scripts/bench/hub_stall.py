"""How long a gevent hub stalls while hash tables are built, four ways.

``python -m scripts.bench.hub_stall``: a greenlet ticks every millisecond
while the same process builds eight tables (32 backends each, every one
new) one after the other:

- ``plain``: ``HashRing.build`` in one go (what the lease holder did before),
- ``sleep(0)``: ``HashRing.build_steps`` with ``gevent.sleep(0)`` between
  steps (gevent runs such callbacks on for up to 50 of them before it polls
  for I/O or timers, so it stalls as long as ``plain``),
- ``steps``: the same with a 0.1 ms timer between steps (what
  ``dns_follower`` does: the loop polls for I/O between two steps),
- ``threadpool``: ``HashRing.build`` in gevent's threadpool (a real thread,
  which holds the GIL for up to ``sys.getswitchinterval()`` at a time).

Printed: the median wall time of a build, and the ticker's p99 and longest
wait between two ticks (1 ms of it is its own sleep).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import gevent

from prefork_lb.hashing import HashRing
from prefork_lb.maglev import run_steps

Members = tuple[tuple[int, str, int], ...]
BUILDS = 8


def _members(number: int) -> Members:
    return tuple((i, f"http://10.{number}.0.{i}:8080", 1) for i in range(32))


def _stepped(pause: float) -> Callable[[Members], HashRing]:
    def build(members: Members) -> HashRing:
        return run_steps(HashRing.build_steps(members), lambda: gevent.sleep(pause))

    return build


def _in_threadpool(members: Members) -> HashRing:
    ring: HashRing = gevent.get_hub().threadpool.spawn(HashRing.build, members).get()
    return ring


WAYS: dict[str, Callable[[Members], HashRing]] = {
    "plain": HashRing.build,
    "sleep(0)": _stepped(0),
    "steps": _stepped(0.0001),
    "threadpool": _in_threadpool,
}


def measure(build: Callable[[Members], HashRing], first: int) -> tuple[float, float, float]:
    """Median build wall time, and the ticker's p99 and longest wait, in milliseconds."""
    waits: list[float] = []
    ticking = True

    def tick() -> None:
        last = time.perf_counter()
        while ticking:
            gevent.sleep(0.001)
            now = time.perf_counter()
            waits.append(now - last)
            last = now

    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)
    walls = []
    for number in range(first, first + BUILDS):
        started = time.perf_counter()
        build(_members(number))
        walls.append(time.perf_counter() - started)
        gevent.sleep(0.02)
    ticking = False
    ticker.join()
    waits.sort()
    p99 = waits[int(len(waits) * 0.99)]
    return statistics.median(walls) * 1000, p99 * 1000, waits[-1] * 1000


def main() -> None:
    """Print one line per way of building."""
    print(f"{'way':<11} {'build':>9} {'tick p99':>9} {'tick max':>9}   (ms, wall clock)")
    for number, (name, build) in enumerate(WAYS.items()):
        wall, p99, longest = measure(build, first=number * BUILDS + 1)
        print(f"{name:<11} {wall:>9.1f} {p99:>9.1f} {longest:>9.1f}")


if __name__ == "__main__":
    main()
