"""Runtime control: the rules of an operator's writes, no I/O.

An operator sets a backend ``ready``, ``drain`` or ``maint`` and may replace
its weight, through the admin endpoint (``admin.py``) or ``ctl``. Both live in
the backend's health row (``BackendHealth.admin`` and ``.weight``), which
every worker already reads to choose a backend, so a change is seen by every
worker at once and costs the request path nothing.

=======  ===============================================================
state    rule
=======  ===============================================================
ready    health alone decides (up, down, on trial)
drain    no new request is sent to it; those in flight, and tunnels, finish;
         sticky and hashed keys move as if it were down
maint    as drain, and its active health checks stop
=======  ===============================================================

This module parses the write bodies and the ``state_file``, and applies a
change to a row. Everything that can be wrong is a ``ControlError`` that
carries its HTTP status and a message for the operator.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prefork_lb.health import BackendHealth

MAX_WEIGHT = 1000  # as the ``weight`` option
# How long a saved state of a DNS address that is not in the balancer at a
# start or reload waits for DNS to give it: a restart, or the address's own
# restart, takes minutes; an address gone for longer may be another machine's now.
PENDING_SECONDS = 600.0


class AdminState(enum.IntEnum):
    """What an operator has asked of a backend (stored in its health row)."""

    READY = 0
    DRAIN = 1
    MAINT = 2

    @property
    def label(self) -> str:
        """The name used in the API, the JSON and the state file."""
        return self.name.lower()


class ControlError(Exception):
    """A write that cannot be applied; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class SavedState:
    """A backend's state as the ``state_file`` keeps it, by the backend's name."""

    name: str
    state: AdminState
    weight: int  # 0: the configured one
    # A DNS address's state waiting for the address: when it began to wait
    # (time.time(), kept in the file across restarts); 0.0 for any other.
    since: float = 0.0

    def change(self, index: int) -> Change:
        """This state as a write to backend ``index``."""
        return Change(index, state=self.state, weight=self.weight)


@dataclass(frozen=True, slots=True)
class Change:
    """One operator write: the backend's index and its new state or weight."""

    index: int
    state: AdminState | None = None
    weight: int | None = None

    def applied(self, row: BackendHealth) -> tuple[BackendHealth, None]:
        """``apply`` in the shape ``HealthTable.update`` takes."""
        return self.apply(row), None

    def apply(self, row: BackendHealth) -> BackendHealth:
        """The row with this change made (health fields untouched)."""
        if self.state is not None:
            row = replace(row, admin=int(self.state))
        if self.weight is not None:
            row = replace(row, weight=self.weight)
        return row


def admin_state(row: BackendHealth) -> AdminState:
    """The row's admin state (an unknown number reads as ``ready``)."""
    try:
        return AdminState(row.admin)
    except ValueError:
        return AdminState.READY


def effective_weight(row: BackendHealth, configured: int) -> int:
    """The weight selection uses: the operator's if set, else the configured one."""
    return row.weight or configured


def backend_index(names: Sequence[str], name: str) -> int:
    """The index of the backend called ``name`` (404 ``ControlError`` if none)."""
    try:
        return list(names).index(name)
    except ValueError:
        raise ControlError(404, f"no backend named {name!r}; known: {', '.join(names)}") from None


def parse_body(body: bytes) -> dict[str, Any]:
    """A write's JSON object (400 ``ControlError`` if it is not one)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ControlError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise ControlError(400, "the body must be a JSON object")
    return document


def parse_state(document: Mapping[str, Any]) -> AdminState:
    """The state a ``/state`` body asks for: ``{"state": "ready" | "drain" | "maint"}``."""
    value = document.get("state")
    for state in AdminState:
        if value == state.label:
            return state
    raise ControlError(
        400, f'"state" must be one of "ready", "drain", "maint", got {json.dumps(value)}'
    )


def parse_weight(document: Mapping[str, Any]) -> int:
    """The weight a ``/weight`` body asks for: ``{"weight": N}``, 1 to 1000."""
    value = document.get("weight")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(400, f'"weight" must be a whole number, got {json.dumps(value)}')
    if value < 0:
        raise ControlError(400, f'"weight" must not be negative, got {value}')
    if not 1 <= value <= MAX_WEIGHT:
        raise ControlError(
            400,
            f'"weight" must be from 1 to {MAX_WEIGHT} (to stop new requests, drain), got {value}',
        )
    return value


def render_state_file(
    names: Sequence[str], rows: Sequence[BackendHealth], waiting: Sequence[SavedState] = ()
) -> str:
    """The ``state_file`` text for these rows (each backend's admin state and weight).

    ``waiting``: saved states of DNS addresses not in the balancer yet
    (``PendingStates``); kept in the file until they are applied or expire.
    A backend present now (in ``names``) is written from its row.
    """
    backends = {
        saved.name: {
            "state": saved.state.label,
            "weight": saved.weight,
            "waiting_since": saved.since,
        }
        for saved in waiting
        if saved.name not in names
    }
    backends |= {
        name: {"state": admin_state(row).label, "weight": row.weight}
        for name, row in zip(names, rows, strict=True)
        if name and (row.admin or row.weight)
    }
    return json.dumps({"version": 1, "backends": backends}, indent=2, sort_keys=True) + "\n"


def _saved_state(name: str, entry: object) -> SavedState:
    """One backend's entry of a ``state_file`` (``ValueError`` if it is not one we wrote)."""
    if not isinstance(entry, dict):
        raise ValueError(f"backend {name!r}: not an object")
    try:
        state = parse_state(entry)
        weight = entry.get("weight", 0)
        weight = 0 if weight == 0 else parse_weight(entry)
    except ControlError as err:
        raise ValueError(f"backend {name!r}: {err.message}") from None
    since = entry.get("waiting_since", 0.0)
    if isinstance(since, bool) or not isinstance(since, int | float) or not since >= 0:
        raise ValueError(f"backend {name!r}: waiting_since must be a time in seconds")
    return SavedState(name, state, weight, float(since))


def parse_state_file(
    text: str, names: Sequence[str], *, dns: bool = False, now: float = 0.0
) -> tuple[list[Change], list[SavedState], list[str]]:
    """What a ``state_file`` holds for the backends ``names``: changes, pending states, warnings.

    A name in ``names`` is a change to apply now. With ``dns`` (some pool
    finds its backends through DNS), a name that is an address (``ip:port``)
    not present now is pending: applied when DNS gives that address (see
    ``PENDING_SECONDS``). Any other name is no longer configured: left out
    with a warning. ``now`` (``time.time()``): a pending state that began to
    wait before this read keeps its start, and one that has waited
    ``PENDING_SECONDS`` is dropped with a warning, however often the balancer
    restarted meanwhile. Raises ``ValueError`` when the file is not one this
    module wrote.
    """
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("backends"), dict):
        raise ValueError('not a state file: no "backends" object')
    changes, pending, warnings = [], [], []
    for name, entry in document["backends"].items():
        if name in names:
            changes.append(_saved_state(name, entry).change(list(names).index(name)))
        elif dns and is_address_key(name):
            saved = _saved_state(name, entry)
            since = saved.since or now
            if now - since >= PENDING_SECONDS:
                warnings.append(
                    f"address {name!r} has not been in DNS for {PENDING_SECONDS:.0f} s; "
                    f"its saved state {saved.state.label} dropped"
                )
            else:
                pending.append(replace(saved, since=since))
        else:
            warnings.append(f"backend {name!r} is no longer configured; its saved state ignored")
    return changes, pending, warnings


def is_address_key(name: str) -> bool:
    """Whether ``name`` is ``ip:port`` (``[ip]:port`` for IPv6): how a DNS address is named."""
    if name.startswith("["):
        host, bracket, port = name[1:].partition("]:")
        if not bracket or ":" not in host:
            return False
    else:
        host, colon, port = name.rpartition(":")
        if not colon or ":" in host:
            return False
    if not host.isascii() or "%" in host:
        return False  # DNS gives no IPv6 scope ("%eth0"), which ipaddress would take
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535 and port[0] != "0"
