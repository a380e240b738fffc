"""The load: closed-loop keep-alive connections, every request recorded.

Run inside the client's namespace (``python -m scripts.bench.cluster drive``)
until TERM or its time limit. Each connection sends ``GET /``, waits for the
answer, sends the next; a failed request is recorded and the connection made
again. Each record says when the request went and came back (CLOCK_MONOTONIC,
the same clock in every namespace), on which connection, whether it
succeeded, and which backend answered to which instance (the backends name
both in their headers), so failures can be set against what each instance
held.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import gevent
import gevent.event
import gevent.socket

from scripts.bench.cluster.configs import BACKEND_HEADER, PEER_HEADER

REQUEST = b"GET / HTTP/1.1\r\nHost: cluster\r\n\r\n"
REQUEST_TIMEOUT_S = 5.0
_MAX_HEAD = 16384
# (sent, answered, loop, connection, ok, instance peer, backend, error): "loop" is one of
# the closed loops, "connection" the serial number of its TCP connection.
Record = tuple[float, float, int, int, bool, str, str, str]


class RequestFailed(Exception):
    """The answer did not come, or was not a whole 200."""


def _read_response(sock: gevent.socket.socket, buffer: bytearray) -> tuple[dict[str, str], bool]:
    """One response's headers (lower-case names) and whether the server keeps the connection."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise RequestFailed("closed before a response" if not buffer else "head cut short")
        buffer += chunk
        if len(buffer) > _MAX_HEAD:
            raise RequestFailed("response head too long")
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RequestFailed("body cut short")
        rest += chunk
    buffer[:] = rest[length:]
    if status_line.split(" ")[1:2] != ["200"]:
        raise RequestFailed(status_line)
    return headers, headers.get("connection", "").lower() != "close"


def _connection_loop(
    number: int, address: tuple[str, int], stop: gevent.event.Event, records: list[Record]
) -> None:
    sock: gevent.socket.socket | None = None
    serial = 0
    buffer = bytearray()
    while not stop.is_set():
        sent = time.monotonic()
        try:
            with gevent.Timeout(REQUEST_TIMEOUT_S, RequestFailed("no answer in time")):
                if sock is None:
                    serial += 1
                    sock = gevent.socket.create_connection(address)
                    buffer.clear()
                sock.sendall(REQUEST)
                headers, keep = _read_response(sock, buffer)
        except (OSError, RequestFailed, ValueError) as err:
            failed = (sent, time.monotonic(), number, serial, False, "", "", str(err)[:80])
            records.append(failed)
            if sock is not None:
                sock.close()
                sock = None
            gevent.sleep(0.01)
            continue
        records.append(
            (
                sent,
                time.monotonic(),
                number,
                serial,
                True,
                headers.get(PEER_HEADER.lower(), ""),
                headers.get(BACKEND_HEADER.lower(), ""),
                "",
            )
        )
        if not keep:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def drive(host: str, port: int, connections: int, max_seconds: float, save_as: Path) -> None:
    """Load ``host:port`` until TERM or ``max_seconds``; the records as JSON in ``save_as``."""
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    records: list[Record] = []
    started = time.monotonic()
    loops = [
        gevent.spawn(_connection_loop, n, (host, port), stop, records) for n in range(connections)
    ]
    stop.wait(max_seconds)
    stop.set()
    gevent.joinall(loops, timeout=REQUEST_TIMEOUT_S + 1)
    document = {"started": started, "stopped": time.monotonic(), "records": records}
    save_as.write_text(json.dumps(document))


if __name__ == "__main__":
    import sys

    _host, _port, _connections, _seconds, _save_as = sys.argv[1:6]
    drive(_host, int(_port), int(_connections), float(_seconds), Path(_save_as))
