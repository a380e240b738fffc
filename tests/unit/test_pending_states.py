"""Saved states waiting for their DNS address: taken once, kept until their deadline."""

from __future__ import annotations

import json
from pathlib import Path

from prefork_lb.runtime import AdminState, SavedState
from prefork_lb.shared import HealthTable, PendingStates
from prefork_lb.state_file import load_state

DRAIN = SavedState("10.1.0.7:8080", AdminState.DRAIN, 0)
MAINT = SavedState("[fd00::ffff:ffff:ffff:ffff]:65535", AdminState.MAINT, 1000)


def test_a_waiting_state_is_taken_once_by_its_address() -> None:
    """take() returns the state saved for that address, then no longer has it."""
    pending = PendingStates(4)
    assert pending.load([DRAIN, MAINT], deadline=100.0) == ()
    assert pending.take("10.1.0.8:8080", now=1.0) is None
    assert pending.take(DRAIN.name, now=1.0) == DRAIN
    assert pending.take(DRAIN.name, now=2.0) is None
    assert pending.waiting(now=2.0) == (MAINT,)


def test_a_state_waits_until_its_deadline_only() -> None:
    """After the deadline a state is neither taken nor kept for the file."""
    pending = PendingStates(2)
    pending.load([DRAIN], deadline=100.0)
    assert pending.waiting(now=99.9) == (DRAIN,)
    assert pending.waiting(now=100.0) == ()
    assert pending.take(DRAIN.name, now=100.0) is None


def test_more_states_than_room_are_returned_and_a_new_load_replaces() -> None:
    """States beyond the capacity are handed back; loading again forgets the earlier ones."""
    pending = PendingStates(1)
    assert pending.load([DRAIN, MAINT], deadline=100.0) == (MAINT,)
    pending.load([MAINT], deadline=100.0)
    assert pending.waiting(now=1.0) == (MAINT,)
    assert PendingStates(0).load([DRAIN], deadline=100.0) == (DRAIN,)


def test_a_scoped_address_in_the_state_file_is_warned_about_not_a_crash(tmp_path: Path) -> None:
    """A saved name with an IPv6 scope (non-ASCII here) is no DNS address: ignored, not raised."""
    path = tmp_path / "state.json"
    saved = {"[fe80::7%\u00e9]:8080": {"state": "drain"}, DRAIN.name: {"state": "drain"}}
    path.write_text(json.dumps({"version": 1, "backends": saved}), encoding="utf-8")
    pending, table = PendingStates(2), HealthTable(2)
    try:
        assert load_state(str(path), ("web-1", ""), table, pending) == 0
        assert pending.waiting(now=0.0) == (DRAIN,)
    finally:
        table.close()
        pending.close()
