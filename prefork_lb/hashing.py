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

import functools
import hashlib
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

# The table size: a prime, and the same whatever the backends (a size that
# changed with their number would move nearly every key when one is added).
# Maglev's balance is within about 1% at 100 entries per backend; building it
# takes about 0.2 s, once per hash pool in each worker.
TABLE_SIZE = 65521
KEY_KINDS = ("ip", "header", "cookie", "query", "path")


def key_hash(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
    return offset, skip


def maglev_table(names: Sequence[str], weights: Sequence[int]) -> tuple[int, ...]:
    """Maglev's lookup table over ``names`` (positions into it), each filling by its weight.

    Each backend walks its own permutation of the table (an offset and a
    skip from its name); in turns, each takes its next free entry. A backend
    of weight w takes a turn whenever its credit, w / max(weights) per round,
    reaches a whole entry, so its share of the table is about its weight's.
    """
    if not names or len(names) != len(weights) or min(weights) < 1:
        raise ValueError("maglev_table needs one positive weight per name")
    size = TABLE_SIZE
    permutations = [_offset_skip(name, size) for name in names]
    nexts = [0] * len(names)
    credit = [0.0] * len(names)
    heaviest = max(weights)
    table = [-1] * size
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(permutations):
            credit[i] += weights[i] / heaviest
            if credit[i] < 1.0:
                continue
            credit[i] -= 1.0
            entry = (offset + nexts[i] * skip) % size
            while table[entry] >= 0:
                nexts[i] += 1
                entry = (offset + nexts[i] * skip) % size
            table[entry] = i
            nexts[i] += 1
            filled += 1
            if filled == size:
                return tuple(table)


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
        listed = sorted(members, key=lambda member: member[1])
        table = maglev_table([url for _, url, _ in listed], [w for _, _, w in listed])
        return cls(tuple(listed[i][0] for i in table), {i: w for i, _, w in listed})

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


@functools.lru_cache(maxsize=64)
def ring_for(members: tuple[tuple[int, str, int], ...]) -> HashRing:
    """``HashRing.build(members)``, remembered: the master builds each pool's once, before
    it forks, and every worker finds it made (building one takes about 0.2 s of CPU)."""
    return HashRing.build(members)


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
