"""A small Server-Sent Events backend: a chunked `text/event-stream`, events on a schedule.

``GET /events?count=N&gap=S[&last_gap=S]`` answers 200 with no length
(``Transfer-Encoding: chunked``) and then writes ``count`` events, one chunk
each, ``gap`` seconds apart (the last one ``last_gap`` after the one before
it, if given), then the final chunk. The time each event was written
(``time.monotonic()``, the same clock as the test's, in this process) is
recorded, so a test can tell how long each took to reach its client.

With ``lockstep=1`` the server writes event N (N > 0) only once the test has
called ``acknowledge(N - 1)`` on reading event N - 1, or after ``LOCKSTEP_WAIT_S``
without it; such events are listed in ``forced``. A proxy that holds events
back makes every event forced; one that passes each on at once, none, however
slow the machine is (short of a multi-second stall).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from io import BufferedIOBase
from urllib.parse import parse_qs, urlsplit

LOCKSTEP_WAIT_S = 3.0


def event(number: int) -> bytes:
    """Event ``number`` as it goes over the wire (one chunk's data)."""
    return f"id: {number}\ndata: event {number}\n\n".encode()


class SSEBackend:
    """A threaded event-stream server on 127.0.0.1 with an ephemeral port."""

    def __init__(self) -> None:
        self.written: dict[int, float] = {}  # event number -> when it was written
        self.forced: list[int] = []  # lockstep events written before the one before arrived
        self._acknowledged = -1
        self._arrivals = threading.Condition()
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                backend._stream(self.request, self.rfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SSEBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _stream(self, sock: socket.socket, rfile: BufferedIOBase) -> None:
        request_line = rfile.readline().decode("latin-1")
        while rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        query = parse_qs(urlsplit(request_line.split()[1]).query)
        count = int(query.get("count", ["5"])[0])
        gap = float(query.get("gap", ["0.1"])[0])
        last_gap = float(query.get("last_gap", [str(gap)])[0])
        lockstep = query.get("lockstep") == ["1"]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for number in range(count):
                time.sleep(last_gap if number == count - 1 and number > 0 else gap)
                if lockstep and number > 0 and not self._arrived(number - 1):
                    self.forced.append(number)
                data = event(number)
                self.written[number] = time.monotonic()
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    def acknowledge(self, number: int) -> None:
        """The client has read event ``number`` (for ``lockstep=1``)."""
        with self._arrivals:
            self._acknowledged = max(self._acknowledged, number)
            self._arrivals.notify_all()

    def _arrived(self, number: int) -> bool:
        with self._arrivals:
            return self._arrivals.wait_for(
                lambda: self._acknowledged >= number, timeout=LOCKSTEP_WAIT_S
            )
