"""Consistent hashing for ``policy = "hash"``: the key, the Maglev table, bounded load. Pure.

The table is Maglev's (``maglev``), weighted: built from the
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
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from prefork_lb.maglev import Steps, maglev_steps, run_steps

KEY_KINDS = ("ip", "header", "cookie", "query", "path")


def key_hash(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


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
