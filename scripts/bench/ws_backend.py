"""The WebSocket backend of the load test's WebSocket phase (the ``websockets`` library).

``/echo`` sends every message back; ``/bulk?size=N`` sends N-byte binary
messages, one after another, until the client closes; a plain ``GET /``
answers 200 (for ``wait-ready``). One process, one asyncio loop: the same
backend for every target (direct, prefork_lb, nginx).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

DEFAULT_BULK_MESSAGE = 1024 * 1024


def serve_ws_backend(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    asyncio.run(_serve(port))


async def _serve(port: int) -> None:
    async with serve(
        _handle,
        "127.0.0.1",
        port,
        backlog=1024,
        compression=None,
        max_size=None,
        ping_interval=None,
        process_request=_plain,
    ) as server:
        await server.serve_forever()


def _plain(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Upgrade") is None:
        return connection.respond(HTTPStatus.OK, "ws backend\n")
    return None


async def _handle(ws: ServerConnection) -> None:
    target = urlsplit(ws.request.path if ws.request is not None else "/")
    try:
        if target.path == "/bulk":
            size = int(parse_qs(target.query).get("size", [str(DEFAULT_BULK_MESSAGE)])[0])
            payload = bytes(size)
            while True:
                await ws.send(payload)
        else:
            async for message in ws:
                await ws.send(message)
    except ConnectionClosed:
        pass
