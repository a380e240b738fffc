"""How long one Maglev table takes to build: ``python -m scripts.bench.maglev_build``.

For 4, 32 and 128 backends, with equal weights, mixed weights (1 to 5) and
one backend far heavier than the rest (100 to 1), the best of a few builds
of ``maglev.maglev_table`` (65,521 entries), in milliseconds of CPU. The stall a
change used to cause in the worker that publishes DNS answers was one such
build per hash pool; ``tests/support/hash_stall.py`` measures that stall.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from prefork_lb.maglev import maglev_table

SIZES = (4, 32, 128)
WEIGHTS: dict[str, Callable[[int], list[int]]] = {
    "equal": lambda count: [1] * count,
    "mixed 1-5": lambda count: [1 + i % 5 for i in range(count)],
    "one at 100": lambda count: [100] + [1] * (count - 1),
}


def best_build_ms(names: Sequence[str], weights: Sequence[int], runs: int) -> float:
    """The fastest of ``runs`` builds of the table, in milliseconds of CPU (a busy machine
    stretches wall-clock time, not this)."""
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        maglev_table(names, weights)
        best = min(best, time.thread_time() - started)
    return best * 1000


def main() -> None:
    """Print one line per number of backends and kind of weights."""
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.maglev_build")
    parser.add_argument("--runs", type=int, default=5, help="builds per figure (the best counts)")
    runs = parser.parse_args().runs
    print(f"{'backends':>8}  " + "  ".join(f"{kind:>10}" for kind in WEIGHTS) + "   (ms per build)")
    for count in SIZES:
        names = [f"http://10.0.{i // 250}.{i % 250}:8080" for i in range(count)]
        figures = [best_build_ms(names, weights(count), runs) for weights in WEIGHTS.values()]
        print(f"{count:>8}  " + "  ".join(f"{ms:>10.1f}" for ms in figures))


if __name__ == "__main__":
    main()
