"""Backend selection and the retry rule: pure decisions, no I/O.

Round robin is nginx's smooth weighted round robin made shareable: the
schedule for a set of weights is computed once (weights 5, 1, 1 give
a a b a c a a), and the rotation position every worker draws from the shared
counter indexes it. Any ``sum(weights)`` consecutive positions therefore
visit each backend exactly ``weight`` times, whichever workers drew them.
The schedule is built over the backends usable right now, so while one is
down the rotation stays even among the others.

Least connections picks the smallest ``in_flight / weight`` (in-flight counts
summed over every worker), breaking ties by the shared rotation position.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prefork_lb.errors import NoBackendAvailable

LEAST_CONN = "least_conn"  # one of config.POLICIES; round robin otherwise
HASH = "hash"  # consistent hashing (hashing.py); round robin for requests without a key
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Weights are scaled by this while a backend slow-starts, so that even a
# weight of 1 can ramp up in steps.
RAMP_STEPS = 10


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend as selection sees it: its index, weight and current standing."""

    index: int
    weight: int
    backup: bool
    usable: bool
    share: float = 1.0  # below 1 while it slow-starts


@dataclass(frozen=True, slots=True)
class Eligible:
    """The backends a request may go to, with the weights to use for them."""

    indexes: tuple[int, ...]
    weights: tuple[int, ...]
    panic: bool = False  # every backend looked down; fail-open uses them all


def eligible(
    candidates: Sequence[Candidate], *, exclude: frozenset[int] = frozenset(), fail_open: bool
) -> Eligible:
    """The usable primaries; else the usable backups; else (fail-open) every primary.

    A single configured backend is always eligible, up or down (as in nginx).

    Raise ``NoBackendAvailable`` when there is none: the request is answered
    503 at once rather than tried on backends known to be down.
    """
    if len(candidates) == 1 and not exclude:
        # As nginx: a lone backend is never considered down; 503 would help nobody.
        only = candidates[0]
        return Eligible((only.index,), (only.weight,))
    left = [c for c in candidates if c.index not in exclude]
    for group in (
        [c for c in left if c.usable and not c.backup],
        [c for c in left if c.usable and c.backup],
    ):
        if group:
            return Eligible(tuple(c.index for c in group), _weights(group))
    if fail_open:
        group = [c for c in left if not c.backup] or left
        if group:
            return Eligible(tuple(c.index for c in group), tuple(c.weight for c in group), True)
    if exclude:
        raise NoBackendAvailable("every other backend is down or was already tried")
    raise NoBackendAvailable("every backend is down")


def _weights(group: Sequence[Candidate]) -> tuple[int, ...]:
    if all(c.share >= 1.0 for c in group):
        return tuple(c.weight for c in group)
    return tuple(max(1, math.ceil(c.weight * RAMP_STEPS * min(c.share, 1.0))) for c in group)


@functools.lru_cache(maxsize=256)
def smooth_schedule(weights: tuple[int, ...]) -> tuple[int, ...]:
    """nginx's smooth weighted round robin, one full cycle: positions into ``weights``.

    Each step every entry gains its weight, the largest (first on ties) is
    picked and loses the total. Weights are divided by their common divisor
    first, so that equal weights give a cycle of one pick each.
    """
    if not weights or min(weights) < 1:
        raise ValueError(f"weights must be positive, got {weights!r}")
    divisor = math.gcd(*weights)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    schedule = []
    for _ in range(total):
        for i, weight in enumerate(reduced):
            current[i] += weight
        best = max(range(len(current)), key=current.__getitem__)
        current[best] -= total
        schedule.append(best)
    return tuple(schedule)


def pick_round_robin(choice: Eligible, position: int) -> int:
    """The backend index for this rotation position (smooth weighted round robin)."""
    schedule = smooth_schedule(choice.weights)
    return choice.indexes[schedule[position % len(schedule)]]


def pick_least_conn(choice: Eligible, in_flight: Sequence[int], position: int) -> int:
    """The backend with the fewest in-flight requests per unit of weight.

    ``in_flight`` is indexed by backend index. Ties go round robin by position.
    """
    loads = [in_flight[i] / w for i, w in zip(choice.indexes, choice.weights, strict=True)]
    lowest = min(loads)
    tied = [i for i, load in zip(choice.indexes, loads, strict=True) if load == lowest]
    return tied[position % len(tied)]


def may_retry(
    *,
    method: str,
    request_sent: bool,
    body_replayable: bool,
    tries: int,
    retries: int,
    elapsed: float,
    budget: float,
) -> bool:
    """Whether a failed try may go on to the next backend.

    A request that never reached the backend (the connection failed) may go
    anywhere else, whatever its method. One that may have reached it is
    repeated only if repeating cannot change anything: an idempotent method
    (RFC 9110 section 9.2.2) with a body the balancer still holds. POST and
    PATCH are never sent twice. Either way, within ``retries`` extra tries
    and ``budget`` seconds since the first.
    """
    if tries > retries or elapsed >= budget:
        return False
    return not request_sent or (method in IDEMPOTENT and body_replayable)
