"""The slot rules for addresses found through DNS: take, keep, drain, free, left out."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.dns import Address
from prefork_lb.slots import EMPTY, Slot, SlotState, assign

ACTIVE, DRAINING = SlotState.ACTIVE, SlotState.DRAINING


def a(last: int, weight: int = 1, *, backup: bool = False) -> Address:
    """The address 10.0.0.LAST:80."""
    return Address(f"10.0.0.{last}", 80, weight, backup)


def slot(state: SlotState, last: int, weight: int = 1) -> Slot:
    """A slot holding 10.0.0.LAST:80."""
    return Slot(state, f"10.0.0.{last}", 80, weight)


def held(slots: Sequence[Slot]) -> list[tuple[str, str]]:
    """Each slot as (state, ip:port), EMPTY as ("EMPTY", "")."""
    return [(s.state.name, s.key if s.state != SlotState.EMPTY else "") for s in slots]


def test_new_addresses_take_the_lowest_free_slots_in_address_order() -> None:
    """Addresses fill free slots from the first, sorted by IP whatever the answer's order."""
    result = assign([EMPTY] * 3, [a(9), a(2)], [0, 0, 0])
    assert held(result.slots) == [
        ("ACTIVE", "10.0.0.2:80"),
        ("ACTIVE", "10.0.0.9:80"),
        ("EMPTY", ""),
    ]
    assert result.fresh == (0, 1)
    assert result.changed


def test_a_kept_address_keeps_its_slot_and_is_not_fresh() -> None:
    """An address still in the answer stays in its slot; health and counts are kept."""
    result = assign([EMPTY, slot(ACTIVE, 5)], [a(5), a(1)], [0, 0])
    assert held(result.slots) == [("ACTIVE", "10.0.0.1:80"), ("ACTIVE", "10.0.0.5:80")]
    assert result.fresh == (0,)


def test_a_kept_address_takes_its_new_weight_and_backup() -> None:
    """SRV weight and priority changes reach the slot without making it fresh."""
    result = assign([slot(ACTIVE, 5)], [a(5, 7, backup=True)], [0])
    assert result.slots[0] == Slot(ACTIVE, "10.0.0.5", 80, 7, True)
    assert result.fresh == ()
    assert result.changed


def test_nothing_changes_when_the_answer_is_the_same() -> None:
    """The same set again changes no slot."""
    slots = [slot(ACTIVE, 1), slot(ACTIVE, 2)]
    result = assign(slots, [a(2), a(1)], [3, 0])
    assert result.slots == tuple(slots)
    assert not result.changed


def test_a_vanished_address_drains_and_is_freed_on_a_later_publish_once_idle() -> None:
    """Gone from the answer: DRAINING; EMPTY on a later publish, once nothing is in flight."""
    first = assign([slot(ACTIVE, 1), slot(ACTIVE, 2)], [a(1)], [0, 0])
    assert held(first.slots) == [("ACTIVE", "10.0.0.1:80"), ("DRAINING", "10.0.0.2:80")]
    assert first.drained == (1,)
    busy = assign(first.slots, [a(1)], [0, 2])
    assert busy.slots == first.slots
    idle = assign(busy.slots, [a(1)], [0, 0])
    assert held(idle.slots) == [("ACTIVE", "10.0.0.1:80"), ("EMPTY", "")]
    assert idle.freed == (1,)


def test_a_draining_address_that_comes_back_is_revived_in_its_slot() -> None:
    """A DRAINING slot whose address returns is ACTIVE again, not fresh (its health is kept)."""
    result = assign([EMPTY, slot(DRAINING, 4)], [a(4)], [0, 1])
    assert held(result.slots) == [("EMPTY", ""), ("ACTIVE", "10.0.0.4:80")]
    assert result.fresh == ()


def test_a_freed_slot_may_be_taken_in_the_same_publish() -> None:
    """A drained, idle slot is freed and a new address takes it at once."""
    result = assign([slot(DRAINING, 1)], [a(2)], [0])
    assert held(result.slots) == [("ACTIVE", "10.0.0.2:80")]
    assert (result.freed, result.fresh) == ((0,), (0,))


def test_addresses_beyond_the_slots_are_left_out() -> None:
    """More addresses than free slots: the rest are named in left_out."""
    result = assign([slot(ACTIVE, 3), EMPTY], [a(1), a(2), a(3)], [0, 0])
    assert held(result.slots) == [("ACTIVE", "10.0.0.3:80"), ("ACTIVE", "10.0.0.1:80")]
    assert result.left_out == ("10.0.0.2:80",)


def test_ipv6_addresses_are_keyed_in_brackets() -> None:
    """An IPv6 address is named [ip]:port."""
    result = assign([EMPTY], [Address("fd00::1", 8080)], [0])
    assert result.slots[0].key == "[fd00::1]:8080"


@pytest.mark.parametrize("count", [1, 4])
def test_an_empty_answer_drains_everything(count: int) -> None:
    """An empty set (the shell never publishes one on failure) drains every slot."""
    slots = [slot(ACTIVE, i) for i in range(count)]
    result = assign(slots, [], [0] * count)
    assert all(s.state == DRAINING for s in result.slots)


answers = st.lists(st.sets(st.integers(1, 12), max_size=8), min_size=1, max_size=6)


@given(answers)
def test_the_active_slots_hold_the_answer_once_drained_slots_are_freed(
    history: list[set[int]],
) -> None:
    """After any run of answers, the last one published again is exactly what the ACTIVE slots hold.

    (A slot drained by the last publish is freed only by the next, so until
    then an answer as large as the slots may not fit.)
    """
    slots: tuple[Slot, ...] = (EMPTY,) * 8
    for answer in history:
        # Nothing in flight: every draining slot may go on the next publish.
        slots = assign(slots, [a(n) for n in answer], [0] * 8).slots
        active = {s.key for s in slots if s.state == ACTIVE}
        assert active <= {f"10.0.0.{n}:80" for n in answer}
    slots = assign(slots, [a(n) for n in history[-1]], [0] * 8).slots
    assert sorted(s.key for s in slots if s.state == ACTIVE) == sorted(
        f"10.0.0.{n}:80" for n in history[-1]
    )
    live = [s.key for s in slots if s.state != SlotState.EMPTY]
    assert len(live) == len(set(live))
