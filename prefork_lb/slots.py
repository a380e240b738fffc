"""Which slot each address found through DNS takes: every rule in this one file, no I/O.

A DNS source has a fixed number of slots (``dns_slots``: shared memory is
fixed-size, as HAProxy's ``server-template`` count is). Each slot is EMPTY,
ACTIVE (an address of the last good answer) or DRAINING (an address that
left the answer: no new requests, its requests in flight finish).

=========  ======================================  ================================
slot       the new answer                          becomes
=========  ======================================  ================================
ACTIVE     still holds its address                 ACTIVE (weight, backup updated)
ACTIVE     no longer holds it                      DRAINING
DRAINING   holds its address again                 ACTIVE (revived, health kept)
DRAINING   does not, and nothing is in flight      EMPTY (on a later publish than
                                                   the one that drained it)
EMPTY      a new address, this the lowest free     ACTIVE (fresh: health and
           slot (addresses in ``ip:port`` order)   counts start anew)
=========  ======================================  ================================

An address for which no slot is free is left out (``Assignment.left_out``).
A slot is freed one publish after it started draining, never in the same
one: a worker that chose it a moment before may not have counted its
request in flight yet.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class SlotState(enum.IntEnum):
    """What a slot holds."""

    EMPTY = 0
    ACTIVE = 1
    DRAINING = 2


class FoundAddress(Protocol):
    """An address as DNS gave it (``dns.Address`` is one)."""

    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def backup(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot of a DNS source: its state and the address it holds (none when EMPTY)."""

    state: SlotState = SlotState.EMPTY
    ip: str = ""
    port: int = 0
    weight: int = 1
    backup: bool = False

    @property
    def key(self) -> str:
        """``ip:port`` (IPv6 in brackets), how the balancer names the address."""
        return address_key(self.ip, self.port)


EMPTY = Slot()


def address_key(ip: str, port: int) -> str:
    """``ip:port``, an IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _order(address: FoundAddress) -> tuple[int, int, int]:
    parsed = ipaddress.ip_address(address.ip)
    return parsed.version, int(parsed), address.port


@dataclass(frozen=True, slots=True)
class Assignment:
    """The slots after a publish, and what it did."""

    slots: tuple[Slot, ...]
    fresh: tuple[int, ...]  # slots that took a new address: reset their health and counts
    drained: tuple[int, ...]  # slots that started draining
    freed: tuple[int, ...]  # slots that became EMPTY
    left_out: tuple[str, ...]  # ``ip:port`` of addresses that found no free slot
    changed: bool  # whether any slot differs from before


def assign(
    slots: Sequence[Slot], found: Sequence[FoundAddress], in_flight: Sequence[int]
) -> Assignment:
    """The slots after publishing ``found`` (the whole current answer) over ``slots``.

    ``in_flight`` holds each slot's requests in flight over every worker.
    """
    wanted = {address_key(a.ip, a.port): a for a in sorted(found, key=_order)}
    new: list[Slot] = list(slots)
    fresh: list[int] = []
    drained: list[int] = []
    freed: list[int] = []
    updated = False
    for number, slot in enumerate(slots):
        if slot.state == SlotState.EMPTY:
            continue
        address = wanted.pop(slot.key, None)
        if address is not None:
            kept = Slot(SlotState.ACTIVE, slot.ip, slot.port, address.weight, address.backup)
            updated |= kept != slot
            new[number] = kept
        elif slot.state == SlotState.ACTIVE:
            new[number] = Slot(SlotState.DRAINING, slot.ip, slot.port, slot.weight, slot.backup)
            drained.append(number)
        elif in_flight[number] <= 0:
            # Draining since an earlier publish (never this one), and done.
            new[number] = EMPTY
            freed.append(number)
    free = [number for number, slot in enumerate(new) if slot.state == SlotState.EMPTY]
    left_out = []
    for key, address in wanted.items():
        if not free:
            left_out.append(key)
            continue
        number = free.pop(0)
        new[number] = Slot(
            SlotState.ACTIVE, address.ip, address.port, address.weight, address.backup
        )
        fresh.append(number)
    return Assignment(
        slots=tuple(new),
        fresh=tuple(fresh),
        drained=tuple(drained),
        freed=tuple(freed),
        left_out=tuple(left_out),
        changed=bool(fresh or drained or freed or updated),
    )
