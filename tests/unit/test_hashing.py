"""Consistent hashing: the same table everywhere, weights kept, minimal disruption, bounded load."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.hashing import (
    HashKey,
    HashRing,
    key_hash,
    parse_hash_key,
    request_key,
)
from prefork_lb.maglev import TABLE_SIZE, maglev_steps, maglev_table, run_steps

KEYS = [key_hash(f"user-{n}".encode()) for n in range(100_000)]


@functools.cache
def _ring(count: int) -> HashRing:
    return HashRing.build((i, f"http://10.0.0.{i}:8080", 1) for i in range(count))


def _moved(before: HashRing, after: HashRing, allowed: frozenset[int]) -> float:
    """The share of the 100,000 keys that go elsewhere after the change."""
    moved = sum(
        before.pick(key, allowed) != after.pick(key, allowed | frozenset(after.weights))
        for key in KEYS
    )
    return moved / len(KEYS)


def test_the_table_depends_on_urls_and_weights_only() -> None:
    """Two builds, members listed in any order and numbered alike, give the same table."""
    members = [(i, f"http://10.0.0.{i}:8080", 1 + i % 3) for i in range(7)]
    assert HashRing.build(members) == HashRing.build(reversed(members))


def test_key_hash_is_fixed() -> None:
    """The key hash is BLAKE2b's, not Python's salted hash(): the same in every process."""
    digest = hashlib.blake2b(b"user-1", digest_size=8).digest()
    assert key_hash(b"user-1") == int.from_bytes(digest, "big")


# Tables as the first implementation built them (pinned before it was made faster): every
# instance, old and new, must send a key to the same backend.
PINNED_TABLES = [
    pytest.param(
        [f"http://10.0.0.{i}:8080" for i in range(3)],
        [1, 1, 1],
        (1, 0, 2, 0, 2, 1, 1, 2),
        "bee8b2fc563f6120b38e43233db8fe1c5af2a5172b23c18c6b46a3e1b7ca494d",
        id="three-equal",
    ),
    pytest.param(
        [f"http://10.0.0.{i}:8080" for i in range(7)],
        [1 + i % 3 for i in range(7)],
        (4, 6, 2, 5, 6, 1, 4, 2),
        "dd7c069b607a4fd67d7e236a717511088650fac2d0bd8c3f23685a070bf55fb7",
        id="seven-mixed",
    ),
    pytest.param(
        ["http://a:80", "http://b:80"],
        [100, 1],
        (0, 0, 0, 0, 0, 0, 0, 0),
        "6493c4d4b15a0c28290c08027e41e1421dc8ee03507d9c2f4f3dd78f25b80ef5",
        id="one-heavy",
    ),
    pytest.param(
        [f"http://10.1.{i // 8}.{i % 8}:9000" for i in range(40)],
        [10 * (1 + i % 4) for i in range(40)],
        (4, 23, 8, 29, 13, 37, 23, 38),
        "47a99011f55462ae48960528ae886481b99142773e09c8e7b153e125460fc82f",
        id="forty-srv",
    ),
]


@pytest.mark.parametrize(("names", "weights", "first", "digest"), PINNED_TABLES)
def test_the_table_is_the_one_every_version_builds(
    names: list[str], weights: list[int], first: tuple[int, ...], digest: str
) -> None:
    """For a fixed input the table is, entry for entry, the one the first version built."""
    table = maglev_table(names, weights)
    assert table[:8] == first
    assert hashlib.sha256(",".join(map(str, table)).encode()).hexdigest() == digest


def _reference_table(names: list[str], weights: list[int], size: int) -> tuple[int, ...]:
    """The table as the first version built it: Maglev's loop, written plainly."""
    permutations = []
    for name in names:
        digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
        offset = int.from_bytes(digest[:8], "big") % size
        skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
        permutations.append((offset, skip))
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


@given(
    members=st.lists(
        st.tuples(st.text(min_size=1, max_size=12), st.integers(1, 1000)),
        min_size=1,
        max_size=40,
        unique_by=lambda member: member[0],
    ),
    size=st.sampled_from([2, 3, 251, 1021, 4093]),
)
def test_the_fast_build_gives_the_plain_loops_table(
    members: list[tuple[str, int]], size: int
) -> None:
    """For any names and weights, the table is the plain Maglev loop's, entry for entry."""
    names = [name for name, _ in members]
    weights = [weight for _, weight in members]
    assert maglev_table(names, weights, size) == _reference_table(names, weights, size)


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([65535, 1, 2, 3], id="srv-weight-extremes"),
        pytest.param([1000] + [1] * 63, id="one-heavy-many-light"),
        pytest.param([7, 5, 3, 2, 2], id="uneven"),
    ],
)
def test_the_fast_build_gives_the_plain_loops_table_at_full_size(weights: list[int]) -> None:
    """With the real table size and uneven weights, the table is the plain loop's too."""
    names = [f"http://10.2.0.{i}:80" for i in range(len(weights))]
    assert maglev_table(names, weights) == _reference_table(names, weights, TABLE_SIZE)


def test_a_step_wise_build_yields_often_and_builds_the_same_table() -> None:
    """Built in steps, with a call between each two, the table comes out the same."""
    names = [f"http://10.3.0.{i}:80" for i in range(32)]
    weights = [1 + i % 5 for i in range(32)]
    calls = []
    table = run_steps(maglev_steps(names, weights), lambda: calls.append(1))
    assert table == maglev_table(names, weights)
    # Dozens of steps: no one step is more than a small part of the build.
    assert len(calls) >= 30


@pytest.mark.parametrize("weights", [[1, 1, 1], [5, 1, 1], [1, 2, 3, 4], [100, 1]])
def test_weights_are_respected(weights: list[int]) -> None:
    """Each backend's share of the table (and of keys) is its share of the weights, within 1.5%."""
    table = maglev_table([f"b{i}" for i in range(len(weights))], weights)
    counts = Counter(table)
    for i, weight in enumerate(weights):
        assert counts[i] / len(table) == pytest.approx(weight / sum(weights), abs=0.015)


def test_a_backend_down_moves_only_its_own_keys() -> None:
    """With one of 5 backends unusable, every key of the others stays where it was."""
    ring = _ring(5)
    everyone = frozenset(range(5))
    without = everyone - {2}
    for key in KEYS[:20_000]:
        before = ring.pick(key, everyone)
        after = ring.pick(key, without)
        assert before in (after, 2)
    shares = Counter(
        ring.pick(key, without) for key in KEYS[:20_000] if ring.pick(key, everyone) == 2
    )
    # Its keys spread over the others.
    assert len(shares) == 4


@pytest.mark.parametrize("count", [3, 5, 10])
def test_adding_a_backend_moves_about_one_nth(count: int) -> None:
    """Going from N to N+1 backends moves about 1/(N+1) of 100,000 keys (Maglev: a little more)."""
    moved = _moved(_ring(count), _ring(count + 1), frozenset(range(count)))
    assert 0.95 / (count + 1) <= moved <= 1.1 / (count + 1)


@pytest.mark.parametrize("count", [3, 5, 10])
def test_removing_a_backend_moves_about_one_nth(count: int) -> None:
    """Going from N to N-1 backends (the last removed) moves about 1/N of 100,000 keys."""
    moved = _moved(_ring(count), _ring(count - 1), frozenset(range(count)))
    assert 0.95 / count <= moved <= 1.1 / count


@given(
    loads=st.lists(st.integers(0, 50), min_size=2, max_size=8),
    key=st.integers(0, 2**64 - 1),
    factor=st.sampled_from([1.0, 1.25, 2.0]),
)
def test_bounded_load_never_overloads_a_backend(loads: list[int], key: int, factor: float) -> None:
    """The backend picked is within factor x its share of the load (counting this request),
    unless every backend is over it (then the key's own backend)."""
    ring = _ring(len(loads))
    allowed = frozenset(range(len(loads)))
    picked = ring.pick(key, allowed, loads, factor)
    assert picked is not None
    bound = factor * (sum(loads) + 1) / len(loads)
    if any(load + 1 <= -(-bound // 1) for load in loads):
        assert loads[picked] + 1 <= -(-bound // 1)
    if loads[ring.pick(key, allowed)] + 1 <= -(-bound // 1):
        # Under its bound the key's own backend keeps it.
        assert picked == ring.pick(key, allowed)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ip", HashKey("ip")),
        ("path", HashKey("path")),
        ("header:X-User", HashKey("header", "X-User")),
        ("cookie:sid", HashKey("cookie", "sid")),
        ("query:u", HashKey("query", "u")),
        ("header:", None),
        ("body", None),
    ],
)
def test_parse_hash_key(spec: str, expected: HashKey | None) -> None:
    """hash_key spellings and what they mean."""
    assert parse_hash_key(spec) == expected


HEADERS = [("Host", "h"), ("X-User", "alice"), ("Cookie", "a=1; sid=s3cr3t; b=2")]


@pytest.mark.parametrize(
    ("spec", "target", "expected"),
    [
        ("ip", "/", b"10.1.2.3"),
        ("path", "/a/b?x=1", b"/a/b"),
        ("header:x-user", "/", b"alice"),
        ("header:X-Other", "/", None),
        ("cookie:sid", "/", b"s3cr3t"),
        ("cookie:none", "/", None),
        ("query:u", "/p?x=1&u=42&u=43", b"42"),
        ("query:u", "/p?x=1", None),
        ("query:u", "/p?u=", None),
    ],
)
def test_request_key(spec: str, target: str, expected: bytes | None) -> None:
    """The key is taken from the right part of the request; missing or empty: none."""
    key = parse_hash_key(spec)
    assert key is not None
    assert request_key(key, client="10.1.2.3", target=target, headers=HEADERS) == expected
