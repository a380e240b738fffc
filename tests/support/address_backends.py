"""Backends on several loopback addresses and one port, as DNS A records name them.

``name:port`` gives every address the same port, so the backends a test
puts behind one name listen on 127.0.0.2, 127.0.0.3 ... (Linux routes all of
127.0.0.0/8 to the loopback) on one shared port. Each answers ``GET /`` with
its address, ``GET /slow?s=SECONDS`` after that many seconds, ``GET /health``
with 200 (503 while its address is in ``sick``), and counts the requests
other than health checks it got and the connections open to it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and the body go in two writes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner.connected(self.server.ip, 1)

    def finish(self) -> None:
        self.server.owner.connected(self.server.ip, -1)
        super().finish()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        status = 200
        if parts.path == "/health":
            status = 503 if self.server.ip in self.server.owner.sick else 200
        else:
            if parts.path == "/slow":
                time.sleep(float(parse_qs(parts.query).get("s", ["1"])[0]))
            self.server.owner.count(self.server.ip)
        body = self.server.ip.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ip: str, port: int, owner: AddressBackends) -> None:
        self.ip = ip
        self.owner = owner
        super().__init__((ip, port), _Handler)


class AddressBackends:
    """``count`` HTTP servers on 127.0.0.2 onwards, one shared port; ``ips`` names them."""

    def __init__(self, count: int, first: int = 2) -> None:
        self.ips = [f"127.0.0.{first + i}" for i in range(count)]
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()  # open now, by address
        self.sick: set[str] = set()  # addresses whose /health answers 503
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}

    def count(self, ip: str) -> None:
        """One request answered by ``ip``."""
        with self._lock:
            self.hits[ip] += 1

    def connected(self, ip: str, change: int) -> None:
        """A connection to ``ip`` opened (1) or closed (-1)."""
        with self._lock:
            self.connections[ip] += change

    def clear(self) -> None:
        """Forget the counts."""
        with self._lock:
            self.hits.clear()

    def start(self) -> AddressBackends:
        """Bind every address on one free port (tried again if another holds it on one)."""
        for _ in range(20):
            probe = socket.create_server((self.ips[0], 0))
            self.port = probe.getsockname()[1]
            probe.close()
            try:
                for ip in self.ips:
                    self._servers[ip] = _Server(ip, self.port, self)
            except OSError:
                self._close()
                continue
            for server in self._servers.values():
                threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            return self
        raise RuntimeError("no port free on every address")

    def stop(self, ip: str) -> None:
        """Stop the server on ``ip`` (connections to it are refused from now on)."""
        server = self._servers.pop(ip)
        server.shutdown()
        server.server_close()

    def _close(self) -> None:
        for server in self._servers.values():
            server.server_close()
        self._servers.clear()

    def close(self) -> None:
        """Stop every server."""
        for ip in list(self._servers):
            self.stop(ip)

    def __enter__(self) -> AddressBackends:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
