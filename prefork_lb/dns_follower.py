"""Re-resolving the DNS sources, by exactly one worker at a time.

Every worker starts a ``DnsFollower``; each one waits for the resolving
lease (a record lock the kernel releases when its holder dies, as the
prober's). The worker holding it runs one greenlet per DNS source: resolve,
feed the last-good-set state machine (``dns.follow``: a failure never
empties a set, its line is logged once per change), publish the set into
the shared slots (``dns_publish.publish``), and sleep as the records' TTL
says, between 1 s and ``dns_interval`` (after a failure: 1 s, doubling up
to ``dns_interval``, ``dns.retry_delay``); while a slot drains, it publishes
the same set again every ``DRAIN_TICK`` so the slot is freed as soon as its
last request ends. If that worker dies, another takes the lease within half
an interval and goes on from the slots as published.
"""

from __future__ import annotations

import logging
import os
import random
import time

import gevent
import gevent.lock

from prefork_lb.config import DnsGroup
from prefork_lb.dns import DnsFailure, DnsState, Resolution, follow, next_delay, retry_delay
from prefork_lb.dns_publish import active_addresses, left_out_line, publish
from prefork_lb.resolver import Resolver
from prefork_lb.shared import SharedState
from prefork_lb.slots import SlotState

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")

# While a slot drains, how often its source's slots are published again (seconds).
DRAIN_TICK = 0.25

# A timer this short ends on the event loop's next turn, after it has polled for I/O.
_STEP_PAUSE = 0.0001


def _let_requests_run() -> None:
    """Between two steps of a hash table's build: the requests this worker serves go on."""
    # Not sleep(0): that runs this greenlet again before the loop polls for I/O,
    # for up to 50 callbacks (gevent's _run_callbacks), i.e. the whole build.
    gevent.sleep(_STEP_PAUSE)


class DnsFollower:
    """Waits for the resolving lease, then keeps every DNS source's slots current."""

    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._settings = state.settings
        # Each source's addresses last left out for want of a slot (by its first index).
        self._left_out: dict[int, tuple[str, ...]] = {}
        # One publish at a time: each builds from the slots as they were when it began.
        self._publishing = gevent.lock.Semaphore()

    def start(self) -> gevent.Greenlet[[], None] | None:
        """Start waiting for the lease in the background (nothing to do without DNS sources)."""
        if not self._settings.dns_groups:
            return None
        return gevent.spawn(self._run)

    def _run(self) -> None:
        poll = self._settings.dns_interval / 2
        while not self._state.addresses.try_lease():
            gevent.sleep(poll * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not secrecy
        log.info("worker %d now resolves the DNS sources", os.getpid())
        followers = [
            gevent.spawn(self._follow, number, group)
            for number, group in enumerate(self._settings.dns_groups)
        ]
        try:
            gevent.joinall(followers)
        finally:
            # Killed (the worker stops): the sources' greenlets stop with it.
            gevent.killall(followers)

    def _follow(self, number: int, group: DnsGroup) -> None:
        settings = self._settings
        table = self._state.addresses
        _, slots = table.snapshot()
        # From the slots as published (by the master, or the lease's last holder):
        # a new holder logs changes, not the whole set again.
        known = DnsState(
            group.source.label, active_addresses(slots[group.first : group.first + group.count])
        )
        ttl = settings.dns_interval
        failures = 0  # failed resolves in a row
        while True:
            try:
                result: Resolution | DnsFailure = Resolver(
                    settings.dns_resolver, settings.dns_timeout
                ).resolve(group.source)
            except DnsFailure as failure:
                result = failure
                table.count_failure(number, failure.reason)
            draining = False
            try:
                known, line = follow(known, result)
                if line is not None:
                    level = logging.WARNING if known.failing else logging.INFO
                    log.log(level, "%s", line)
                draining = self._publish(group, known)
                if isinstance(result, Resolution):
                    ttl = result.ttl
                    table.resolved(number, len(known.addresses), time.time())
            except Exception:
                # A bug here must not end this source's resolving while this worker keeps the lease.
                log.exception("dns %s: publishing failed unexpectedly", group.source.label)
            # An empty answer is a failure too (``follow``): the set is kept, ask again soon.
            failed = isinstance(result, DnsFailure) or not result.addresses
            failures = failures + 1 if failed else 0
            delay = (
                retry_delay(failures, settings.dns_interval)
                if failures
                else next_delay(ttl, settings.dns_interval)
            )
            self._wait(group, known, delay, draining=draining)

    def _publish(self, group: DnsGroup, known: DnsState) -> bool:
        """Publish the last good set into the group's slots; whether a slot is still draining."""
        with self._publishing:
            assignment = publish(
                self._state, group, known.addresses, time.monotonic(), _let_requests_run
            )
        if assignment.left_out != self._left_out.get(group.first, ()) and assignment.left_out:
            log.warning("%s", left_out_line(group, assignment.left_out))
        self._left_out[group.first] = assignment.left_out
        return any(slot.state == SlotState.DRAINING for slot in assignment.slots)

    def _wait(self, group: DnsGroup, known: DnsState, delay: float, *, draining: bool) -> None:
        """Sleep ``delay`` seconds; while a slot drains, publish again every ``DRAIN_TICK``.

        So a drained slot is freed (and an address left out for want of one
        takes it) a moment after its last request ends, not at the next
        resolve, which a long TTL puts up to ``dns_interval`` away. No DNS
        query, no work on the request path: only the slots and in-flight rows.
        """
        deadline = time.monotonic() + delay
        while draining:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            gevent.sleep(min(DRAIN_TICK, remaining))
            try:
                draining = self._publish(group, known)
            except Exception:
                log.exception("dns %s: publishing failed unexpectedly", group.source.label)
                draining = False
        gevent.sleep(max(deadline - time.monotonic(), 0.0))
