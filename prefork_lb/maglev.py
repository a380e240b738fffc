"""Maglev's lookup table (Eisenbud et al., NSDI 2016), weighted, built fast and in steps. Pure.

Each backend walks its own permutation of the table (an offset and a skip
from a BLAKE2b hash of its name); in turns, each takes its next free entry.
The table is the same, entry for entry, as that plain loop builds (the
tests check it against the loop), only built with less work per entry: see
``maglev_steps``. A build can go in steps of about a millisecond of CPU, so
that a worker serving requests goes on serving between them (``run_steps``
with a function that yields to the event loop).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

# The table size: a prime, and the same whatever the backends (a size that
# changed with their number would move nearly every key when one is added).
# Maglev's balance is within about 1% at 100 entries per backend; building it
# takes about 20 ms (README, "Backends from DNS", has the figures).
TABLE_SIZE = 65521

# While most entries are free, a turn looks at one or two: a plain loop does it.
# Once fewer than 1/8 are free, it may look at hundreds: _CHUNK at a time, in C.
_CROWDED_AFTER = 7 / 8
_CHUNK = 32
# Work between two yields of the step-wise builds: a millisecond or so of CPU.
_STEP_TURNS = 2048
_STEP_CHUNKS = 1024
_STEP_ROUNDS = 8192

T = TypeVar("T")
Steps = Generator[None, None, T]


def run_steps(steps: Steps[T], between: Callable[[], None] | None = None) -> T:
    """Run a step-wise build to its end and return what it built.

    ``between`` is called after each step: the shell passes a function that
    lets other work run (a worker serving requests yields to its event loop).
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if between is not None:
            between()


def _offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
    return offset, skip


def maglev_table(
    names: Sequence[str], weights: Sequence[int], size: int = TABLE_SIZE
) -> tuple[int, ...]:
    """Maglev's lookup table over ``names`` (positions into it), each filling by its weight.

    Each backend walks its own permutation of the table (an offset and a
    skip from its name); in turns, each takes its next free entry. A backend
    of weight w takes a turn whenever its credit, w / max(weights) per round,
    reaches a whole entry, so its share of the table is about its weight's.
    ``size`` (a prime) is TABLE_SIZE but in tests.
    """
    return run_steps(maglev_steps(names, weights, size))


def maglev_steps(
    names: Sequence[str], weights: Sequence[int], size: int = TABLE_SIZE
) -> Steps[tuple[int, ...]]:
    """``maglev_table`` in steps of about a millisecond: it yields between them, returns the table.

    The same table, entry for entry, as the plain loop the docstring of
    ``maglev_table`` describes (tests/unit/test_hashing.py checks it against
    that loop): only the way to it is shorter.
    """
    if not names or len(names) != len(weights) or min(weights) < 1:
        raise ValueError("maglev_table needs one positive weight per name")
    order = yield from _turn_order(weights, size)
    yield
    permutations = [_offset_skip(name, size) for name in names]
    at = [offset for offset, _ in permutations]  # each backend's next entry to look at
    skips = [skip for _, skip in permutations]
    taken = bytearray(size)
    table = [0] * size
    crowded = int(size * _CROWDED_AFTER)
    for start in range(0, crowded, _STEP_TURNS):
        for index in order[start : min(start + _STEP_TURNS, crowded)]:
            entry = at[index]
            skip = skips[index]
            while taken[entry]:
                # (entry + skip) % size without the division: skip < size.
                entry += skip
                if entry >= size:
                    entry -= size
            taken[entry] = 1
            table[entry] = index
            entry += skip
            at[index] = entry - size if entry >= size else entry
        yield
    # From here on, _CHUNK copies of ``taken`` end to end: a backend's next _CHUNK entries,
    # (entry + k * skip) % size for k < _CHUNK, are the slice
    # tiled[entry : entry + _CHUNK * skip : skip] (entry and skip are below size).
    tiled = taken * _CHUNK
    all_taken = b"\x01" * _CHUNK
    yield
    work = 0
    for index in order[crowded:]:
        entry = at[index]
        skip = skips[index]
        while (found := tiled[entry : entry + _CHUNK * skip : skip].find(0)) < 0:
            entry = (entry + _CHUNK * skip) % size
            work += 1
        entry = (entry + found * skip) % size
        tiled[entry::size] = all_taken
        table[entry] = index
        entry += skip
        at[index] = entry - size if entry >= size else entry
        work += 1
        if work >= _STEP_CHUNKS:
            work = 0
            yield
    return tuple(table)


def _turn_order(weights: Sequence[int], size: int) -> Steps[list[int]]:
    """The backend of each of the first ``size`` turns (a turn fills one entry), in order.

    In rounds, each backend in the order of ``weights`` adds weight / max to
    its credit and takes a turn when the credit reaches 1. A backend's credit
    depends on its weight alone: the rounds in which a weight turns are worked
    out once per weight (the same float additions, so the same rounds), and
    the turns are ordered by (round, backend).
    """
    count = len(weights)
    heaviest = max(weights)
    by_weight: dict[int, list[int]] = {}
    for index, weight in enumerate(weights):
        by_weight.setdefault(weight, []).append(index)
    if len(by_weight) == 1:
        return (list(range(count)) * -(-size // count))[:size]
    # Enough rounds: after r of them a backend of weight w took at least
    # r * w / heaviest - 1 turns, and every round adds at least one (the heaviest's).
    rounds = math.ceil((size + 2 * count) / sum(w / heaviest for w in weights)) + 2
    keys: list[int] = []
    for weight, members in by_weight.items():
        turned = yield from _turn_rounds(weight / heaviest, rounds)
        keys += [turn * count + index for turn in turned for index in members]
        yield
    keys.sort()
    del keys[size:]
    yield
    order: list[int] = []
    for start in range(0, size, _STEP_TURNS * 8):
        order += [key % count for key in keys[start : start + _STEP_TURNS * 8]]
        yield
    return order


def _turn_rounds(share: float, rounds: int) -> Steps[list[int]]:
    """The rounds, of the first ``rounds``, in which a backend with this share takes a turn."""
    if share == 1.0:
        return list(range(rounds))
    turned: list[int] = []
    credit = 0.0
    for start in range(0, rounds, _STEP_ROUNDS):
        for turn in range(start, min(start + _STEP_ROUNDS, rounds)):
            credit += share
            if credit >= 1.0:
                credit -= 1.0
                turned.append(turn)
        yield
    return turned
