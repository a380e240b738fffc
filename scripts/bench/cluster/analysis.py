"""What a load run's records say: throughput, failures, who served, who held what."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the load, as the driver recorded it."""

    sent: float
    answered: float
    loop: int  # which of the driver's closed loops sent it
    connection: int  # the serial number of that loop's TCP connection
    ok: bool
    peer: str  # the instance's address, as the backend saw it ("" if it failed)
    backend: str
    error: str

    @classmethod
    def from_record(cls, record: Sequence[object]) -> Request:
        """A request from the driver's JSON list."""
        sent, answered, loop, connection, ok, peer, backend, error = record
        return cls(
            float(str(sent)),
            float(str(answered)),
            int(str(loop)),
            int(str(connection)),
            bool(ok),
            str(peer),
            str(backend),
            str(error),
        )


def throughput(requests: Sequence[Request]) -> float:
    """Successful requests per second, over the time from the first sent to the last answered."""
    if not requests:
        return 0.0
    span = max(r.answered for r in requests) - min(r.sent for r in requests)
    done = sum(1 for r in requests if r.ok)
    return done / span if span > 0 else 0.0


def failures(requests: Sequence[Request]) -> list[Request]:
    """The requests that failed, in the order they were sent."""
    return sorted((r for r in requests if not r.ok), key=lambda r: r.sent)


def served_by(requests: Sequence[Request], names: Mapping[str, str]) -> dict[str, int]:
    """Successful requests per instance (``names`` maps an instance's address to its name)."""
    counts = Counter(names.get(r.peer, r.peer) for r in requests if r.ok)
    return {name: counts.get(name, 0) for name in sorted({*names.values(), *counts})}


Connection = tuple[int, int]  # (loop, serial): one TCP connection of the driver


def connections_held(requests: Sequence[Request], peer: str, moment: float) -> set[Connection]:
    """The TCP connections routed to ``peer`` and still open at ``moment``.

    A connection is routed to the instance that answered its last request
    before ``moment``; it is open if that request succeeded (a failure closes
    it). The load is closed-loop, so each holds at most one request in
    flight.
    """
    last: dict[Connection, Request] = {}
    for request in sorted(requests, key=lambda r: r.answered):
        if request.answered <= moment:
            last[(request.loop, request.connection)] = request
    return {key for key, r in last.items() if r.ok and r.peer == peer}


def unanswered_connections(
    requests: Sequence[Request], start: float, end: float
) -> set[Connection]:
    """The TCP connections opened from ``start`` to ``end`` that never got an answer.

    While a killed instance dies (its processes exiting, its listening socket
    still open), HAProxy may hand it a new connection, which the kernel
    accepts and then resets: the instance held it too, though no answer says so.
    """
    first: dict[Connection, Request] = {}
    answered: set[Connection] = set()
    for request in sorted(requests, key=lambda r: r.sent):
        key = (request.loop, request.connection)
        first.setdefault(key, request)
        if request.ok:
            answered.add(key)
    return {key for key, r in first.items() if start <= r.sent <= end and key not in answered}


def failed_on(requests: Sequence[Request], connections: set[Connection], after: float) -> int:
    """Failed requests answered after ``after`` on any of ``connections``."""
    return sum(
        1
        for r in requests
        if not r.ok and r.answered > after and (r.loop, r.connection) in connections
    )


def served_after(requests: Sequence[Request], peer: str, moment: float) -> int:
    """Successful requests sent to ``peer`` after ``moment``."""
    return sum(1 for r in requests if r.ok and r.peer == peer and r.sent > moment)


def last_served(requests: Sequence[Request], peer: str) -> float | None:
    """When the last successful request ``peer`` served was answered; None if it served none."""
    times = [r.answered for r in requests if r.ok and r.peer == peer]
    return max(times) if times else None
