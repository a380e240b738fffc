"""Runtime control's rules: write bodies, the state file, and rows changed by them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.health import BackendHealth
from prefork_lb.runtime import (
    PENDING_SECONDS,
    AdminState,
    Change,
    ControlError,
    SavedState,
    admin_state,
    backend_index,
    effective_weight,
    is_address_key,
    parse_body,
    parse_state,
    parse_state_file,
    parse_weight,
    render_state_file,
)

NAMES = ("a", "b", "c")


@pytest.mark.parametrize(
    ("body", "state"),
    [
        pytest.param(b'{"state": "ready"}', AdminState.READY, id="ready"),
        pytest.param(b'{"state": "drain"}', AdminState.DRAIN, id="drain"),
        pytest.param(b'{"state": "maint"}', AdminState.MAINT, id="maint"),
    ],
)
def test_state_bodies(body: bytes, state: AdminState) -> None:
    """Each of the three states is read from its JSON body."""
    assert parse_state(parse_body(body)) is state


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{nope", "not valid JSON", id="not-json"),
        pytest.param(b"\xff", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1]", "must be a JSON object", id="not-object"),
        pytest.param(b'{"state": "DRAIN"}', '"state" must be one of', id="wrong-case"),
        pytest.param(b'{"state": "down"}', '"state" must be one of', id="unknown"),
        pytest.param(b"{}", '"state" must be one of', id="missing"),
    ],
)
def test_bad_state_bodies_are_400(body: bytes, message: str) -> None:
    """A body that is not a JSON object naming a known state is a 400 that says why."""
    with pytest.raises(ControlError) as caught:
        parse_state(parse_body(body))
    assert caught.value.status == 400
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        pytest.param(-1, "must not be negative", id="negative"),
        pytest.param(0, "from 1 to 1000", id="zero"),
        pytest.param(1001, "from 1 to 1000", id="too-big"),
        pytest.param(2.5, "whole number", id="fraction"),
        pytest.param(True, "whole number", id="bool"),
        pytest.param("5", "whole number", id="string"),
    ],
)
def test_bad_weights_are_400(weight: object, message: str) -> None:
    """A weight that is not a whole number from 1 to 1000 is refused with a reason."""
    with pytest.raises(ControlError) as caught:
        parse_weight({"weight": weight})
    assert caught.value.status == 400
    assert message in caught.value.message


def test_an_unknown_backend_is_404_naming_the_known_ones() -> None:
    """A name no backend has is a 404 that lists the names there are."""
    with pytest.raises(ControlError) as caught:
        backend_index(NAMES, "z")
    assert caught.value.status == 404
    assert "known: a, b, c" in caught.value.message


def test_a_change_keeps_the_health_fields() -> None:
    """Draining or re-weighing a backend leaves its health as it was."""
    row = BackendHealth(up=False, reason="refused", failures=3)
    drained = Change(0, state=AdminState.DRAIN).apply(row)
    weighed = Change(0, weight=7).apply(drained)
    assert (weighed.up, weighed.reason, weighed.failures) == (False, "refused", 3)
    assert admin_state(weighed) is AdminState.DRAIN
    assert effective_weight(weighed, 2) == 7
    assert effective_weight(row, 2) == 2


rows = st.builds(
    BackendHealth,
    admin=st.sampled_from([0, 1, 2]),
    weight=st.integers(min_value=0, max_value=1000),
)


@given(st.lists(rows, min_size=3, max_size=3))
def test_the_state_file_reads_back_what_it_wrote(saved: list[BackendHealth]) -> None:
    """Rendering rows and parsing the text back gives every backend its state and weight."""
    changes, pending, warnings = parse_state_file(render_state_file(NAMES, saved), NAMES)
    assert pending == []
    restored = [BackendHealth() for _ in NAMES]
    for change in changes:
        restored[change.index] = change.apply(restored[change.index])
    assert warnings == []
    assert [(r.admin, r.weight) for r in restored] == [(r.admin, r.weight) for r in saved]


def test_backends_no_longer_configured_are_ignored_with_a_warning() -> None:
    """A saved backend that is not configured any more is skipped, with a warning naming it."""
    text = json.dumps({"version": 1, "backends": {"gone": {"state": "drain"}}})
    changes, pending, warnings = parse_state_file(text, NAMES, dns=True)
    assert (changes, pending) == ([], [])
    assert warnings == ["backend 'gone' is no longer configured; its saved state ignored"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("{", id="truncated"),
        pytest.param("[]", id="list"),
        pytest.param('{"backends": {"a": {"state": "melted"}}}', id="bad-state"),
        pytest.param('{"backends": {"a": {"state": "drain", "weight": -3}}}', id="bad-weight"),
        pytest.param('{"backends": {"a": 1}}', id="bad-entry"),
    ],
)
def test_a_corrupt_state_file_is_a_value_error(text: str) -> None:
    """Anything but a state file this module wrote raises ValueError, for the caller to log."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the damage
        parse_state_file(text, NAMES)


def test_with_dns_a_saved_address_not_present_waits_and_other_names_warn() -> None:
    """With DNS sources, an absent ip:port is pending; an absent plain name still warns."""
    text = json.dumps(
        {
            "version": 1,
            "backends": {
                "a": {"state": "maint", "weight": 0},
                "10.1.0.7:8080": {"state": "drain", "weight": 4},
                "gone": {"state": "drain"},
            },
        }
    )
    changes, pending, warnings = parse_state_file(text, NAMES, dns=True)
    assert changes == [Change(0, state=AdminState.MAINT, weight=0)]
    assert pending == [SavedState("10.1.0.7:8080", AdminState.DRAIN, 4)]
    assert warnings == ["backend 'gone' is no longer configured; its saved state ignored"]
    _, pending, warnings = parse_state_file(text, NAMES)
    assert pending == []
    assert len(warnings) == 2


def test_an_address_present_now_is_a_change_not_a_pending_state() -> None:
    """A saved ip:port that names a backend present now applies to it at once."""
    text = json.dumps({"version": 1, "backends": {"10.1.0.7:8080": {"state": "drain"}}})
    changes, pending, _ = parse_state_file(text, ("a", "10.1.0.7:8080"), dns=True)
    assert (changes, pending) == ([Change(1, state=AdminState.DRAIN, weight=0)], [])


def test_a_pending_state_keeps_when_it_began_to_wait_and_expires_across_restarts() -> None:
    """A saved address's wait starts at its first read and is not started again by later ones:
    after PENDING_SECONDS in all it is dropped with a warning."""
    now = 1_800_000_000.0
    fresh = {"10.1.0.7:8080": {"state": "drain"}}
    _, pending, _ = parse_state_file(_file(fresh), NAMES, dns=True, now=now)
    assert pending == [SavedState("10.1.0.7:8080", AdminState.DRAIN, 0, since=now)]
    rewritten = render_state_file(NAMES, [BackendHealth()] * 3, pending)
    later = now + PENDING_SECONDS - 1
    _, pending, warnings = parse_state_file(rewritten, NAMES, dns=True, now=later)
    assert [saved.since for saved in pending] == [now]
    assert warnings == []
    _, pending, warnings = parse_state_file(rewritten, NAMES, dns=True, now=now + PENDING_SECONDS)
    assert pending == []
    assert warnings == [
        f"address '10.1.0.7:8080' has not been in DNS for {PENDING_SECONDS:.0f} s; "
        "its saved state drain dropped"
    ]


@pytest.mark.parametrize("since", [-1, "soon", True], ids=["negative", "text", "bool"])
def test_a_bad_waiting_since_makes_the_file_corrupt(since: object) -> None:
    """waiting_since is a time in seconds, or the file is not one we wrote."""
    entry = {"10.1.0.7:8080": {"state": "drain", "waiting_since": since}}
    with pytest.raises(ValueError, match="waiting_since must be a time in seconds"):
        parse_state_file(_file(entry), NAMES, dns=True, now=1.0)


def _file(backends: dict[str, object]) -> str:
    return json.dumps({"version": 1, "backends": backends})


def test_rendering_keeps_waiting_states_unless_the_backend_is_present() -> None:
    """Waiting states are written beside the rows; a present backend's row wins over one."""
    rows = [BackendHealth(admin=1), BackendHealth(), BackendHealth()]
    waiting = [
        SavedState("10.1.0.7:8080", AdminState.MAINT, 2, since=1_800_000_000.5),
        SavedState("a", AdminState.READY, 9),
    ]
    document = json.loads(render_state_file(NAMES, rows, waiting))
    assert document["backends"] == {
        "10.1.0.7:8080": {"state": "maint", "weight": 2, "waiting_since": 1_800_000_000.5},
        "a": {"state": "drain", "weight": 0},
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("10.1.0.7:8080", True, id="ipv4"),
        pytest.param("[fd00::7]:8080", True, id="ipv6"),
        pytest.param("fd00::7:8080", False, id="ipv6-without-brackets"),
        pytest.param("[10.1.0.7]:8080", False, id="ipv4-in-brackets"),
        pytest.param("web-1", False, id="name"),
        pytest.param("web-1:8080", False, id="hostname"),
        pytest.param("10.1.0.7", False, id="no-port"),
        pytest.param("10.1.0.7:0", False, id="port-0"),
        pytest.param("10.1.0.7:65536", False, id="port-too-big"),
        pytest.param("10.1.0.7:080", False, id="leading-zero"),
        pytest.param("[fe80::7%eth0]:8080", False, id="ipv6-scope"),
        pytest.param("[fe80::7%\u00e9]:8080", False, id="ipv6-non-ascii-scope"),
    ],
)
def test_address_keys(name: str, expected: bool) -> None:
    """Only ip:port (an IPv6 address in brackets) names a DNS address."""
    assert is_address_key(name) is expected
