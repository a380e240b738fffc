"""The backends as they are now: listed ones as configured, DNS slots with their address.

``Settings.backends`` is fixed for the life of a worker; a DNS slot there is
a template whose url, host and port are placeholders. ``Directory`` is the
``Sequence[Backend]`` that everything reading backends while running reads
instead: a slot is its template with the address it holds now (url
``scheme://ip:port``, name ``ip:port``, the address's weight and backup).
It is rebuilt only when the address table's generation changes: one integer
compare per request, and none at all without DNS sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, overload

from prefork_lb.config import Backend, Pool, Settings, effective_pools
from prefork_lb.hashing import ring_steps
from prefork_lb.maglev import Steps, run_steps
from prefork_lb.scheduling import HASH
from prefork_lb.slots import EMPTY, Slot, SlotState, address_key

if TYPE_CHECKING:
    # Only a type here: shared.handover imports this module.
    from prefork_lb.shared.addresses import AddressTable


def slot_backend(template: Backend, slot: Slot) -> Backend:
    """The template of a DNS slot with the address ``slot`` holds (the template if EMPTY)."""
    if slot.state == SlotState.EMPTY:
        return template
    key = address_key(slot.ip, slot.port)
    return replace(
        template,
        url=f"{template.scheme}://{key}",
        host=slot.ip,
        port=slot.port,
        name=key,
        weight=slot.weight,
        backup=slot.backup,
    )


def current_backends(backends: Sequence[Backend], slots: Sequence[Slot]) -> tuple[Backend, ...]:
    """``backends`` with every DNS slot filled from ``slots`` (indexed alike)."""
    return tuple(
        slot_backend(backend, slots[index]) if backend.dns else backend
        for index, backend in enumerate(backends)
    )


def slot_states(backends: Sequence[Backend], slots: Sequence[Slot]) -> tuple[SlotState, ...]:
    """Each backend's slot state; a listed backend is always ACTIVE."""
    return tuple(
        slots[index].state if backend.dns else SlotState.ACTIVE
        for index, backend in enumerate(backends)
    )


def ring_members(
    settings: Settings,
    pool: Pool,
    backends: Sequence[Backend],
    states: Sequence[SlotState] | None,
) -> tuple[tuple[int, str, int], ...]:
    """A hash pool's table members, (index, URL, weight), as ``backends`` are now.

    A DNS slot counts only while ACTIVE (``states``; None: no slot is), under
    its address's URL and weight: the same set gives the same table in every
    worker and every instance, whatever slots the addresses took.
    """
    return tuple(
        (m.index, backends[m.index].url, backends[m.index].weight if template.dns else m.weight)
        for m in pool.members
        for template in (settings.backends[m.index],)
        if not template.dns or (states is not None and states[m.index] == SlotState.ACTIVE)
    )


def dns_hash_pools(settings: Settings) -> tuple[int, ...]:
    """The pools (by position in ``effective_pools``) that hash over addresses from DNS.

    Their tables change with the answers: the process publishing an answer
    builds them once and shares them (a table takes about 20 ms to build).
    """
    return tuple(
        number
        for number, pool in enumerate(effective_pools(settings))
        if pool.policy == HASH and any(settings.backends[m.index].dns for m in pool.members)
    )


def dns_rings(settings: Settings, slots: Sequence[Slot]) -> dict[int, tuple[int, ...] | None]:
    """The hash tables of ``dns_hash_pools`` (by their number there) for these slots."""
    return run_steps(dns_ring_steps(settings, slots))


def dns_ring_steps(
    settings: Settings, slots: Sequence[Slot]
) -> Steps[dict[int, tuple[int, ...] | None]]:
    """``dns_rings`` in steps (``hashing.ring_steps``): a worker serves between them."""
    backends = current_backends(settings.backends, slots)
    states = slot_states(settings.backends, slots)
    pools = effective_pools(settings)
    rings: dict[int, tuple[int, ...] | None] = {}
    for number, pool in enumerate(dns_hash_pools(settings)):
        members = ring_members(settings, pools[pool], backends, states)
        rings[number] = (yield from ring_steps(members)).entries if members else None
    return rings


class Directory(Sequence[Backend]):
    """Every backend as it is now, by index; follows the shared address table."""

    def __init__(self, backends: tuple[Backend, ...], table: AddressTable | None) -> None:
        self.templates = backends
        # None when no backend comes from DNS: nothing ever changes.
        self._table = table if any(b.dns for b in backends) else None
        self.follows_dns = self._table is not None
        self._generation = -1
        self._current = backends
        self._slots: tuple[Slot, ...] = (EMPTY,) * len(backends)
        self.states: tuple[SlotState, ...] = (SlotState.ACTIVE,) * len(backends)
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the slots if they changed since the last call; whether they had."""
        table = self._table
        if table is None or table.generation() == self._generation:
            return False
        self._generation, self._slots = table.snapshot()
        self._current = current_backends(self.templates, self._slots)
        self.states = slot_states(self.templates, self._slots)
        return True

    def present(self, index: int) -> bool:
        """Whether backend ``index`` exists now (a listed one, or a slot holding an address)."""
        return self.states[index] != SlotState.EMPTY

    def index_of(self, name: str) -> int | None:
        """The index of the backend named ``name`` now (EMPTY slots have no name)."""
        for index, backend in enumerate(self._current):
            if backend.name == name and self.present(index):
                return index
        return None

    @overload
    def __getitem__(self, index: int) -> Backend: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Backend]: ...
    def __getitem__(self, index: int | slice) -> Backend | Sequence[Backend]:
        return self._current[index]

    def __len__(self) -> int:
        return len(self._current)
