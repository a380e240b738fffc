"""Publishing what DNS answered into the shared slots: the master's answer, then the lease's.

``publish`` applies the slot rules (``slots.assign``) to one source's slots
and writes the result, in this order: a slot that takes a new address gets
a fresh health row (up at once, or down until its first passing check when
active checks are on) and fresh counts, then every changed slot is
published at once (one generation). So no worker ever sees a new address
with the health or the counts of the one its slot held before.

``resolve_at_start`` is the master's resolve, before it forks (and again on
HUP): workers start with addresses. It imports neither gevent nor urllib3.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prefork_lb.config import Backend, DnsGroup, Settings
from prefork_lb.directory import dns_ring_steps
from prefork_lb.dns import Address, DnsFailure
from prefork_lb.health import BackendHealth
from prefork_lb.maglev import run_steps
from prefork_lb.shared import SharedState
from prefork_lb.slots import EMPTY, Assignment, Slot, SlotState, assign

_log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


class DnsStartError(Exception):
    """A DNS source could not be resolved at start (and ``dns_allow_empty_start`` is off)."""


def fresh_health(template: Backend, now: float) -> BackendHealth:
    """The health row of an address new to its slot: up, or down until its first passing check."""
    if not template.check.enabled:
        return BackendHealth(up=True, since=now, reason="found through DNS")
    return BackendHealth(
        up=False,
        since=now,
        reason="found through DNS, waiting for its first passing health check",
        retry_at=math.inf,  # only a check brings it up
        successes=max(template.check.rise - 1, 0),
    )


def active_addresses(slots: Sequence[Slot]) -> tuple[Address, ...]:
    """The addresses the ACTIVE slots hold (what DNS last gave)."""
    return tuple(
        Address(slot.ip, slot.port, slot.weight, slot.backup)
        for slot in slots
        if slot.state == SlotState.ACTIVE
    )


def publish(
    state: SharedState,
    group: DnsGroup,
    addresses: Sequence[Address],
    now: float,
    between_steps: Callable[[], None] | None = None,
) -> Assignment:
    """Make ``addresses`` (the source's whole current set) what the group's slots hold.

    ``between_steps`` is called between the steps of building hash tables
    (a worker lets its requests run); no other publish may start meanwhile.
    """
    _, every = state.addresses.snapshot()
    indexes = group.indexes
    slots = every[indexes.start : indexes.stop]
    in_flight = state.in_flight.totals()[indexes.start : indexes.stop]
    result = assign(slots, addresses, in_flight)
    changes = {
        group.first + number: slot
        for number, slot in enumerate(result.slots)
        if slot != slots[number]
    }
    rings = None
    if changes and state.addresses.rings:
        # Built here, once, with the slots: workers read the tables instead of
        # building them (about 20 ms each). Before the rows below: the build may let
        # requests run, which must not see fresh rows under the slots' old addresses.
        after = list(every)
        after[indexes.start : indexes.stop] = result.slots
        rings = run_steps(dns_ring_steps(state.settings, after), between_steps)
    template = state.settings.backends[group.first]
    row = fresh_health(template, now)
    for number in result.fresh:
        state.health.update(group.first + number, lambda _old: (row, None))
        state.stats.clear_column(group.first + number)
    for number in result.freed:
        if number not in result.fresh:
            # A row left down would have every worker re-check its choice on each request.
            state.health.update(group.first + number, lambda _old: (BackendHealth(), None))
    _apply_saved_states(state, group, result, now)
    state.addresses.publish(changes, rings)
    return result


def _apply_saved_states(
    state: SharedState, group: DnsGroup, result: Assignment, now: float
) -> None:
    """Give an address new to its slot the ``state_file``'s state waiting for it, if any.

    Before the slots are published: no worker sees the address without it.
    """
    for number in result.fresh:
        saved = state.pending_states.take(result.slots[number].key, now)
        if saved is None:
            continue
        state.health.update(group.first + number, saved.change(group.first + number).applied)
        _log.warning(
            "state_file: address %s is back in DNS; its saved state %s applied",
            saved.name,
            saved.state.label,
        )


def running_addresses(state: SharedState) -> dict[tuple[str, str], tuple[Address, ...]]:
    """What each DNS source (by pool and source) holds now: the last good sets, for a reload."""
    _, slots = state.addresses.snapshot()
    return {
        (group.pool, group.source.label): active_addresses(
            slots[group.first : group.first + group.count]
        )
        for group in state.settings.dns_groups
    }


def resolve_at_start(
    settings: Settings,
    log: Any,
    running: Mapping[tuple[str, str], tuple[Address, ...]] | None = None,
) -> dict[int, Slot]:
    """The master's first answer for every DNS source: the slots to install, by backend index.

    On a reload, ``running`` holds the sets the running workers have: a
    source that fails then keeps its set. Raises ``DnsStartError`` naming the
    setting and the failure when a source has no address and
    ``dns_allow_empty_start`` is off.
    """
    slots: dict[int, Slot] = {}
    if not settings.dns_groups:
        return slots
    # Imported only when needed: without DNS sources the master never loads dnspython.
    from prefork_lb.resolver import Resolver  # noqa: PLC0415

    resolver: Resolver | None = None
    for group in settings.dns_groups:
        try:
            resolver = resolver or Resolver(settings.dns_resolver, settings.dns_timeout)
            addresses = resolver.resolve(group.source).addresses
        except DnsFailure as failure:
            kept = (running or {}).get((group.pool, group.source.label))
            if kept:
                log.warning(
                    "prefork_lb: dns %s: %s; keeping its running set", group.source.label, failure
                )
                addresses = kept
            else:
                _empty_start(settings, group, failure, log)
                continue
        result = assign((EMPTY,) * group.count, addresses, (0,) * group.count)
        if result.left_out:
            log.warning("prefork_lb: %s", left_out_line(group, result.left_out))
        for number, slot in enumerate(result.slots):
            if slot.state != SlotState.EMPTY:
                slots[group.first + number] = slot
    return slots


def _empty_start(settings: Settings, group: DnsGroup, failure: DnsFailure, log: Any) -> None:
    """Refuse to start a source without addresses, or warn that its pool answers 503."""
    setting = "dns_srv" if group.source.kind == "srv" else "dns"
    where = setting if group.pool == "default" else f"pools.{group.pool}.{setting}"
    message = f"{where}: {group.source.label!r} cannot be resolved: {failure}"
    if not settings.dns_allow_empty_start:
        raise DnsStartError(
            f"{message} (set dns_allow_empty_start = true to start without addresses)"
        )
    log.warning("prefork_lb: %s; its pool answers 503 until addresses appear", message)


def left_out_line(group: DnsGroup, left_out: Sequence[str]) -> str:
    """The line that says which addresses found no slot."""
    return (
        f"dns {group.source.label}: {len(left_out)} more addresses than its "
        f"{group.count} slots (dns_slots), left out: {', '.join(left_out)}"
    )
