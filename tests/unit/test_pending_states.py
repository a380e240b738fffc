"""Saved states waiting for their DNS address: taken once, kept until their time is up."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefork_lb.runtime import PENDING_SECONDS, AdminState, SavedState
from prefork_lb.shared import HealthTable, PendingStates
from prefork_lb.state_file import load_state

WALL = 1_800_000_000.0  # time.time() at the load, in these tests
DRAIN = SavedState("10.1.0.7:8080", AdminState.DRAIN, 0, since=WALL)
MAINT = SavedState("[fd00::ffff:ffff:ffff:ffff]:65535", AdminState.MAINT, 1000, since=WALL)


def test_a_waiting_state_is_taken_once_by_its_address() -> None:
    """take() returns the state saved for that address, then no longer has it."""
    pending = PendingStates(4)
    assert pending.load([DRAIN, MAINT], now=0.0, wall_now=WALL) == ()
    assert pending.take("10.1.0.8:8080", now=1.0) is None
    assert pending.take(DRAIN.name, now=1.0) == DRAIN
    assert pending.take(DRAIN.name, now=2.0) is None
    assert pending.waiting(now=2.0) == (MAINT,)


def test_a_state_waits_until_its_deadline_only() -> None:
    """PENDING_SECONDS after it began to wait a state is neither taken nor kept for the file."""
    pending = PendingStates(2)
    pending.load([DRAIN], now=0.0, wall_now=WALL)
    assert pending.waiting(now=PENDING_SECONDS - 0.1) == (DRAIN,)
    assert pending.waiting(now=PENDING_SECONDS) == ()
    assert pending.take(DRAIN.name, now=PENDING_SECONDS) is None


def test_a_state_that_waited_before_a_restart_waits_only_what_is_left() -> None:
    """One that began to wait 590 s before this load (an earlier run's) has 10 s left."""
    earlier = SavedState(DRAIN.name, AdminState.DRAIN, 0, since=WALL - 590.0)
    pending = PendingStates(1)
    pending.load([earlier], now=50.0, wall_now=WALL)
    assert pending.waiting(now=59.9) == (earlier,)
    assert pending.waiting(now=60.0) == ()


def test_more_states_than_room_are_returned_and_a_new_load_replaces() -> None:
    """States beyond the capacity are handed back; loading again forgets the earlier ones."""
    pending = PendingStates(1)
    assert pending.load([DRAIN, MAINT], now=0.0, wall_now=WALL) == (MAINT,)
    pending.load([MAINT], now=0.0, wall_now=WALL)
    assert pending.waiting(now=1.0) == (MAINT,)
    assert PendingStates(0).load([DRAIN], now=0.0, wall_now=WALL) == (DRAIN,)


def test_a_scoped_address_in_the_state_file_is_warned_about_not_a_crash(tmp_path: Path) -> None:
    """A saved name with an IPv6 scope (non-ASCII here) is no DNS address: ignored, not raised."""
    path = tmp_path / "state.json"
    saved = {"[fe80::7%\u00e9]:8080": {"state": "drain"}, DRAIN.name: {"state": "drain"}}
    path.write_text(json.dumps({"version": 1, "backends": saved}), encoding="utf-8")
    pending, table = PendingStates(2), HealthTable(2)
    try:
        assert load_state(str(path), ("web-1", ""), table, pending) == 0
        (waiting,) = pending.waiting(now=time.monotonic())
        assert (waiting.name, waiting.state) == (DRAIN.name, AdminState.DRAIN)
    finally:
        table.close()
        pending.close()
