"""A real WebSocket server (the ``websockets`` library) that records how each connection ended.

Paths choose the behaviour: ``/echo`` sends every message back, ``/close-first``
closes at once with code 4001, and anything else waits for the client to close.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

BACKEND_CLOSE = (4001, "backend says bye")


@dataclass(frozen=True)
class Ended:
    """How one connection ended, as the server saw it: the close frame it got, if any."""

    path: str
    code: int  # 1006: no close frame (the connection just went)
    reason: str


class WebSocketBackend:
    """A threaded ``websockets`` server on 127.0.0.1 with an ephemeral port."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.ended: queue.Queue[Ended] = queue.Queue()
        self.opened: queue.Queue[str] = queue.Queue()
        self._server: Server = serve(
            self._handle, "127.0.0.1", 0, ssl=tls, max_size=None, compression=None
        )
        self.port: int = self._server.socket.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebSocketBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def end_of(self, path: str, timeout: float = 5.0) -> Ended:
        """How the next connection to ``path`` ended (waits for it; others are passed over)."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.ended.get(timeout=max(deadline - time.monotonic(), 0.01))
            if ended.path == path:
                return ended

    def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "?"
        self.opened.put(path)
        try:
            if path.startswith("/close-first"):
                ws.close(*BACKEND_CLOSE)
            elif path.startswith("/echo"):
                for message in ws:
                    ws.send(message)
            else:
                for _ in ws:
                    pass
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")
        self.ended.put(Ended(path, code, reason))
