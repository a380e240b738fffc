"""Consistent hashing for ``policy = "hash"``: the key, the Maglev table, bounded load. Pure.

The table is Maglev's (Eisenbud et al., NSDI 2016), weighted: built from the
pool's backend URLs and weights alone, with a hash that does not depend on
the process (BLAKE2b, never Python's salted ``hash()``), so every worker,
every instance and every restart sends a key to the same backend.

The table always holds every backend of the pool, up or down; a lookup walks
on from the key's entry past backends that may not take the request. So a
backend going down moves its own keys and nothing else, and when it comes
back they return. Adding or removing a backend (a new table) moves about
1/N of the keys (the README has the figures, tests/unit/test_hashing.py
measures them).

Bounded load (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
Bounded Loads"; HAProxy's ``hash-balance-factor``): a backend may take a
keyed request only while its requests in flight are below ``factor`` times
its weighted share of the pool's, counting this one; otherwise the walk goes
on to the next backend in the table.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote_to_bytes

# The table size: a prime, and the same whatever the backends (a size that
# changed with their number would move nearly every key when one is added).
# Maglev's balance is within about 1% at 100 entries per backend; building it
# takes about 20 ms (README, "Backends from DNS", has the figures).
TABLE_SIZE = 65521
KEY_KINDS = ("ip", "header", "cookie", "query", "path")

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


def key_hash(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


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


@dataclass(frozen=True, slots=True)
class HashRing:
    """A pool's Maglev table: entries are backend indexes (the settings' numbering)."""

    entries: tuple[int, ...]
    weights: dict[int, int]  # backend index -> weight in this pool

    @classmethod
    def build(cls, members: Iterable[tuple[int, str, int]]) -> HashRing:
        """From (backend index, URL, weight) of every member of the pool, backups too.

        Sorted by URL first: the order the pool lists them in changes nothing.
        """
        return run_steps(cls.build_steps(members))

    @classmethod
    def build_steps(cls, members: Iterable[tuple[int, str, int]]) -> Steps[HashRing]:
        """``build`` in steps (``maglev_steps``): it yields between them, returns the ring."""
        listed = sorted(members, key=lambda member: member[1])
        table = yield from maglev_steps([url for _, url, _ in listed], [w for _, _, w in listed])
        yield
        entries = operator.itemgetter(*table)([index for index, _, _ in listed])
        return cls(entries, {i: w for i, _, w in listed})

    def pick(
        self,
        key: int,
        allowed: Collection[int],
        in_flight: Sequence[int] | None = None,
        factor: float = 0.0,
    ) -> int | None:
        """The backend for ``key`` among ``allowed`` (a few indexes); None if none is in the table.

        With ``in_flight`` (per backend index) and ``factor`` > 0, a backend
        at or over its bound is passed over for the next in the table.
        """
        entries = self.entries
        size = len(entries)
        start = key % size
        bound = None
        if in_flight is not None and factor > 0:
            total_weight = sum(self.weights[i] for i in allowed if i in self.weights)
            load = sum(in_flight[i] for i in allowed if i in self.weights)
            if total_weight:
                # Each backend's bound, counting the request being placed.
                bound = factor * (load + 1) / total_weight
        first = None
        seen: set[int] = set()
        for step in range(size):
            index = entries[(start + step) % size]
            if index in seen or index not in allowed:
                continue
            if bound is None or in_flight is None:
                return index
            if in_flight[index] + 1 <= math.ceil(bound * self.weights[index]):
                return index
            if first is None:
                first = index
            seen.add(index)
            if len(seen) == len(allowed):
                break
        return first


# The rings built last, by their members, oldest first (at most _RINGS_KEPT).
_RINGS_KEPT = 64
_rings: dict[tuple[tuple[int, str, int], ...], HashRing] = {}


def ring_for(members: tuple[tuple[int, str, int], ...]) -> HashRing:
    """``HashRing.build(members)``, remembered: the master builds each pool's once, before
    it forks, and every worker finds it made."""
    return run_steps(ring_steps(members))


def ring_steps(members: tuple[tuple[int, str, int], ...]) -> Steps[HashRing]:
    """``ring_for`` in steps: none if the ring is remembered, else ``HashRing.build_steps``'."""
    ring = _rings.pop(members, None)
    if ring is None:
        ring = yield from HashRing.build_steps(members)
    _rings[members] = ring
    while len(_rings) > _RINGS_KEPT:
        del _rings[next(iter(_rings))]
    return ring


@dataclass(frozen=True, slots=True)
class HashKey:
    """What a pool hashes a request on: ``kind`` (one of KEY_KINDS) and a name for some."""

    kind: str
    name: str = ""


def parse_hash_key(text: str) -> HashKey | None:
    """``ip``, ``path``, ``header:NAME``, ``cookie:NAME`` or ``query:NAME``; None if not one."""
    kind, colon, name = text.strip().partition(":")
    if kind in ("ip", "path") and not colon:
        return HashKey(kind)
    if kind in ("header", "cookie", "query") and name.strip():
        return HashKey(kind, name.strip())
    return None


def request_key(
    key: HashKey,
    *,
    client: str,
    target: str,
    headers: Sequence[tuple[str, str]],
) -> bytes | None:
    """The bytes of the request's key, or None when it has none (then it goes round robin).

    ``client`` is the client's address as the balancer trusts it.
    """
    kind = key.kind
    if kind == "ip":
        return client.encode() or None
    if kind == "path":
        return target.partition("?")[0].encode()
    if kind == "header":
        wanted = key.name.lower()
        for name, value in headers:
            if name.lower() == wanted:
                return value.encode("latin-1", "replace") or None
        return None
    if kind == "cookie":
        cookie = cookie_value(headers, key.name)
        return None if cookie is None else cookie.encode("latin-1", "replace")
    return _query_value(target, key.name)


def _query_value(target: str, wanted: str) -> bytes | None:
    """The raw value of parameter ``wanted`` in the target's query (the first, if repeated)."""
    for pair in target.partition("?")[2].split("&"):
        name, _, value = pair.partition("=")
        if unquote_to_bytes(name) == wanted.encode():
            return value.encode() or None
    return None


def cookie_value(headers: Sequence[tuple[str, str]], wanted: str) -> str | None:
    """The value of cookie ``wanted`` in the request's Cookie headers (the first, if repeated)."""
    for name, value in headers:
        if name.lower() != "cookie":
            continue
        for pair in value.split(";"):
            cookie, equals, content = pair.strip().partition("=")
            if equals and cookie == wanted:
                return content.strip() or None
    return None
