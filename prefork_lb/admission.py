"""Connection limits and the waiting room: the admission rules, as pure decisions.

A backend with ``max_conns`` takes a request only while fewer than that are
in flight to it, counted over every worker. When every eligible backend of
a pool is at its limit, the request waits in the pool's waiting room, one
room shared by all workers:

1. no room (``max_queue`` = 0) or a full room: 503 at once (``QueueFull``);
2. otherwise it takes the next ticket, and waits;
3. only the oldest ticket (the room's head) may take a slot that frees, so
   requests are admitted in arrival order across workers; a request that
   arrives while others wait queues behind them even if a slot is free;
4. after ``queue_timeout`` seconds it leaves with 503 (``QueueTimeout``);
   a client that hangs up leaves at once.

The shell (``selector.py``, ``waiting_room.py``) reads the shared counts
under the admission lock and asks these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# Upper bounds (seconds) of the queue-wait histogram's buckets; then +Inf.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AtCapacity(Exception):
    """Every eligible backend of the pool is at its ``max_conns``, or others wait first."""


def may_take_slot(waiting: int, head: int, ticket: int | None) -> bool:
    """Whether a request (with its ticket, if it waits) may take a free slot now.

    With nobody waiting, anyone may; with requests waiting, only the head.
    """
    if waiting == 0:
        return True
    return ticket is not None and ticket == head


def room_for_one_more(waiting: int, max_queue: int) -> bool:
    """Whether another request may wait: ``max_queue`` 0 is no waiting room at all."""
    return waiting < max_queue


def at_limit(
    indexes: Iterable[int], in_flight: Sequence[int], max_conns: Sequence[int]
) -> frozenset[int]:
    """The backends among ``indexes`` whose in-flight count has reached their limit (0: none)."""
    return frozenset(i for i in indexes if max_conns[i] and in_flight[i] >= max_conns[i])


def retry_after(queue_timeout: float) -> int:
    """The Retry-After (seconds) for a request the waiting room turned away."""
    return max(1, math.ceil(queue_timeout))
