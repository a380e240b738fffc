"""The fallback backend when nginx is not installed: a small HTTP/1.1 keep-alive server."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _BackendHandler(BaseHTTPRequestHandler):
    """Answers ``backend-N`` to everything, and the bulk file at /bulk.

    Each answer names the backend (``X-Backend``) and the address that connected
    to it (``X-Backend-Peer``), as scripts/cluster's nginx backends do.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx would
    # Headers and body go out in two writes: without TCP_NODELAY the second waits
    # for the client's delayed ACK, 40 ms a response.
    disable_nagle_algorithm = True
    server: _BackendServer

    def do_GET(self) -> None:
        """Send the bulk file for /bulk, the backend's name otherwise."""
        bulk = self.server.bulk_file
        if self.path == "/bulk":
            with bulk.open("rb") as body:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(bulk.stat().st_size))
                self.end_headers()
                self.connection.sendfile(body)
            return
        answer = f"{self.server.backend_name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Backend", self.server.backend_name)
        self.send_header("X-Backend-Peer", self.client_address[0])
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: logging every request would slow it down further."""


class _BackendServer(ThreadingHTTPServer):
    """A threading server that knows its name and bulk file."""

    daemon_threads = True
    # The default backlog of 5 turns a burst of connects into SYN retries.
    request_queue_size = 1024

    def __init__(self, host: str, port: int, name: str, bulk_file: Path) -> None:
        self.backend_name = name
        self.bulk_file = bulk_file
        super().__init__((host, port), _BackendHandler)


def serve_backend(port: int, name: str, bulk_file: Path, host: str = "127.0.0.1") -> None:
    """Serve on host:port (127.0.0.1 unless told) until killed."""
    _BackendServer(host, port, name, bulk_file).serve_forever()
