"""Built-in demo backends, so a newcomer sees the rotation without setting anything up.

The master binds three sockets on 127.0.0.1 (ephemeral ports, so nothing
collides) and hands them to one child process that answers every request on
socket ``i`` with ``demo-i``. The child exits when the master does, even if
the master is killed without running its exit hook.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefork_lb.config import Backend, parse_backend_url

DEMO_COUNT = 3


@dataclass(frozen=True, slots=True)
class DemoBackends:
    """The running demo process and the backends it serves."""

    process: subprocess.Popen[bytes]
    backends: tuple[Backend, ...]

    def stop(self) -> None:
        """Stop the demo process and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_demo_backends(count: int = DEMO_COUNT) -> DemoBackends:
    """Bind ``count`` loopback sockets and serve them from a child process."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    args = [f"demo-{i}={sock.fileno()}" for i, sock in enumerate(listeners, start=1)]
    process = subprocess.Popen(
        [sys.executable, "-m", "prefork_lb.demo", str(os.getpid()), *args],
        pass_fds=[sock.fileno() for sock in listeners],
    )
    backends = tuple(
        parse_backend_url("demo", f"http://127.0.0.1:{sock.getsockname()[1]}") for sock in listeners
    )
    for sock in listeners:
        sock.close()
    return DemoBackends(process, backends)


class _NameHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "prefork_lb-demo"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        name: str = getattr(self.server, "demo_name", "demo")
        body = f"{name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: the balancer's access log already shows every request."""


def _serve(name: str, fd: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NameHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=fd)
    server.server_address = server.socket.getsockname()
    server.demo_name = name  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(argv: list[str]) -> None:
    """Serve ``name=fd`` pairs until the parent process (the master) is gone."""
    parent = int(argv[0])
    for pair in argv[1:]:
        name, fd = pair.split("=")
        _serve(name, int(fd))
    while os.getppid() == parent:
        time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
