"""Token-bucket arithmetic for the shared rate limiters (pure: the clock is passed in).

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; a
request takes ``cost`` tokens if there are that many, else it is refused
and told how long until there would be. A key never seen, or not seen for
long enough to fill up again, is a full bucket: that is what lets the
shared table forget idle keys without changing any decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    """``tokens`` as they were at ``stamp`` (a ``time.monotonic()`` value)."""

    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether the request may go, the bucket as it is now, and the wait if refused."""

    allowed: bool
    bucket: Bucket
    retry_after: float  # seconds until ``cost`` tokens are there; 0.0 when allowed


def check_rate(rate: float, burst: float) -> None:
    """Refuse a rate or burst a bucket cannot have (``ValueError``)."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of tokens a second, got {rate!r}")
    if not (math.isfinite(burst) and burst >= 1):
        raise ValueError(f"burst must be at least 1 token, got {burst!r}")


def tokens_at(bucket: Bucket | None, *, rate: float, burst: float, now: float) -> float:
    """The tokens in ``bucket`` at ``now`` (a missing bucket is full)."""
    if bucket is None:
        return burst
    # A clock step back (it cannot, with monotonic time) must not take tokens away.
    return min(burst, bucket.tokens + max(0.0, now - bucket.stamp) * rate)


def take(
    bucket: Bucket | None, *, rate: float, burst: float, now: float, cost: float = 1.0
) -> Decision:
    """Take ``cost`` tokens from ``bucket`` at ``now`` if it has them.

    A ``now`` older than the bucket's stamp (a process read the clock, then
    waited for the lock while another went first) leaves the stamp where it
    is: moved back, the time between would be refilled twice.
    """
    if bucket is not None:
        now = max(now, bucket.stamp)
    tokens = tokens_at(bucket, rate=rate, burst=burst, now=now)
    if tokens >= cost:
        return Decision(True, Bucket(tokens - cost, now), 0.0)
    return Decision(False, Bucket(tokens, now), (cost - tokens) / rate)


def is_full(bucket: Bucket, *, rate: float, burst: float, now: float) -> bool:
    """Whether ``bucket`` has refilled completely: then it is the same as no bucket."""
    return tokens_at(bucket, rate=rate, burst=burst, now=now) >= burst
