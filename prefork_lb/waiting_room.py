"""A worker's side of the pools' waiting rooms: requests wait here for a backend below its limit.

The rules are ``admission.py``'s; the shared counts are ``shared.AdmissionTable``'s.
Waiting never blocks the gevent hub: each waiting request's greenlet sleeps
on its own event, woken when a request of this worker frees a slot, and the
oldest waiter of this worker also looks every few milliseconds (a slot freed
by another worker wakes no one here). A worker killed mid-wait leaves
nothing behind: the master clears its rows of the room when it exits.
"""

from __future__ import annotations

import bisect
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent.event

from prefork_lb.admission import AtCapacity, retry_after, room_for_one_more
from prefork_lb.config import Pool
from prefork_lb.errors import ClientLeftQueue, QueueFull, QueueTimeout
from prefork_lb.shared.admission import AdmissionTable

# How often the oldest waiter of this worker looks for a slot another worker
# freed, and how often any waiter looks whether its client hung up.
_HEAD_POLL = 0.002
_POLL = 0.05


class WaitingRoom:
    """This worker's waiting requests, per pool, in ticket order."""

    def __init__(self, table: AdmissionTable, slot: int | None, pools: Sequence[Pool]) -> None:
        self._table = table
        self._slot = slot
        self._pools = pools
        self._waiters: list[list[tuple[int, gevent.event.Event]]] = [[] for _ in pools]
        self._pools_of: dict[int, list[int]] = {}
        for number, pool in enumerate(pools):
            for member in pool.members:
                self._pools_of.setdefault(member.index, []).append(number)

    def wait(self, pool: int, attempt: Callable[[int], int], client: Any) -> int:
        """Wait for ``attempt(ticket)`` to admit the request; the backend index it gave.

        Raises ``QueueFull`` (no room), ``QueueTimeout`` (``queue_timeout``
        passed) or ``ClientLeftQueue`` (the client hung up meanwhile).
        """
        spec = self._pools[pool]
        after = retry_after(spec.queue_timeout)
        if self._slot is None:
            raise QueueFull(f"pool {spec.name}: this worker has no slot to wait in", after)
        waiters = self._waiters[pool]
        with self._table.locked():
            waiting = self._table.waiting(pool)
            if not room_for_one_more(waiting, spec.max_queue):
                raise QueueFull(
                    f"pool {spec.name}: every backend at max_conns, {waiting} waiting "
                    f"(max_queue {spec.max_queue})",
                    after,
                )
            ticket = self._table.ticket(pool)
            event = gevent.event.Event()
            bisect.insort(waiters, (ticket, event), key=lambda waiter: waiter[0])
            self._publish(pool)
        started = time.monotonic()
        deadline = started + spec.queue_timeout
        try:
            while True:
                pause = _POLL
                if waiters[0][0] == ticket:
                    try:
                        return attempt(ticket)
                    except AtCapacity:
                        pause = _HEAD_POLL
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueTimeout(
                        f"pool {spec.name}: no backend below max_conns within "
                        f"{spec.queue_timeout:g} s",
                        after,
                    )
                event.wait(min(pause, remaining))
                event.clear()
                if _hung_up(client):
                    raise ClientLeftQueue(f"pool {spec.name}: the client left while waiting")
        finally:
            waiters.remove((ticket, event))
            self._publish(pool)
            self._table.observe_wait(self._slot, pool, time.monotonic() - started)
            if waiters:
                waiters[0][1].set()

    def wake(self, backend: int) -> None:
        """A request of this worker to ``backend`` ended: its pools' oldest waiters look now."""
        for pool in self._pools_of.get(backend, ()):
            waiters = self._waiters[pool]
            if waiters:
                waiters[0][1].set()

    def _publish(self, pool: int) -> None:
        if self._slot is None:
            return
        waiters = self._waiters[pool]
        self._table.publish(self._slot, pool, len(waiters), waiters[0][0] if waiters else 0)


def _hung_up(client: Any) -> bool:
    """Whether the client closed its connection (readable, with nothing to read).

    Bytes waiting (a body, a pipelined request) say nothing either way; a
    TLS socket cannot be peeked at, so it is never seen to hang up here.
    """
    if not isinstance(client, socket.socket):
        return False
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return False
