"""Streamed responses that are not tunnels: Server-Sent Events reach the client piece by piece.

One balancer with a short ``read_timeout`` in front of a real event-stream
server (``tests/support/sse.py``), which notes when it wrote each event; the
client notes when each arrived. Whether events are held back is told without
a latency bound (that would fail on a loaded machine): in lockstep the server
writes an event only once the client has read the one before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.balancer import BalancerProcess
from tests.support.rawhttp import RawConnection
from tests.support.sse import SSEBackend, event

READ_TIMEOUT = 1.0  # seconds: the longest wait for the next piece of a response


@pytest.fixture(scope="module")
def sse() -> Iterator[SSEBackend]:
    """The event-stream server shared by the module."""
    with SSEBackend() as server:
        yield server


@pytest.fixture(scope="module")
def lb(sse: SSEBackend) -> Iterator[BalancerProcess]:
    """Two workers in front of it, giving up on a backend silent for ``READ_TIMEOUT``."""
    env = {"PREFORK_LB_READ_TIMEOUT": str(READ_TIMEOUT)}
    with BalancerProcess([sse.url], workers=2, env=env) as balancer:
        yield balancer


def test_each_event_reaches_the_client_before_the_next_is_written(
    sse: SSEBackend, lb: BalancerProcess
) -> None:
    """Twelve events 0.2 s apart, in lockstep: each reaches the client before the server
    writes the next one (none held back), then the end.

    The stream lasts longer than read_timeout: that bounds the wait between two pieces.
    """
    count, gap = 12, 0.2
    sse.forced.clear()
    target = f"/events?count={count}&gap={gap}&lockstep=1"
    with RawConnection(lb.port, timeout=5) as conn:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        head = conn.read_head()
        got_head = time.monotonic()
        assert head.status == 200
        assert head.chunked
        assert ("Content-Type", "text/event-stream") in head.headers
        late = []
        for number in range(count):
            expected = event(number)
            assert head.read_exactly(len(expected)) == expected
            late.append(time.monotonic() - sse.written[number])
            sse.acknowledge(number)
        started = min(sse.written.values())
        assert head.finish().body == b"".join(event(n) for n in range(count))
        assert head.complete
    print("event delays:", ", ".join(f"{delay * 1000:.1f} ms" for delay in late))
    assert got_head < started  # the head went out before the first event was written
    assert sse.forced == []
    assert (count * gap) > READ_TIMEOUT


def test_a_pause_longer_than_read_timeout_cuts_the_stream(
    sse: SSEBackend, lb: BalancerProcess
) -> None:
    """Events arrive until the backend falls silent for longer than read_timeout; then the
    stream is cut (no final chunk) and logged as aborted."""
    pause = READ_TIMEOUT * 2.5
    with RawConnection(lb.port, timeout=10) as conn:
        conn.send(
            f"GET /events?count=3&gap=0.1&last_gap={pause} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        head = conn.read_head()
        assert head.status == 200
        assert head.read_exactly(len(event(0)) + len(event(1))) == event(0) + event(1)
        head.finish()
        # From when the backend wrote event 1: the balancer's wait for more starts after it
        # read that, however late this thread got to reading it.
        assert READ_TIMEOUT <= time.monotonic() - sse.written[1] < pause
    assert not head.complete
    assert head.end_reason in ("eof", "reset")
    lb.wait_for_log(r'"GET /events\?count=3\S* HTTP/1\.1" 200 .*error=aborted:BackendTimeout')
