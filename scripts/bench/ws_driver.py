"""The WebSocket client of the load test: bulk relay and small-message echo, one target at a time.

Bulk: one connection to ``/bulk`` reads 1 MiB binary messages for the given
time (backend to client: what the balancer relays is all that varies).
Echo: several connections to ``/echo``, each sending a 32-byte text message
and waiting for it to come back, again and again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

BULK_MESSAGE = 1024 * 1024
ECHO_MESSAGE = "x" * 32


def drive(base_url: str, seconds: float, connections: int) -> dict[str, Any]:
    """Both runs against ``ws://host:port`` (``base_url``); the counts and times, as JSON."""
    return asyncio.run(_drive(base_url.rstrip("/"), seconds, connections))


async def _drive(base_url: str, seconds: float, connections: int) -> dict[str, Any]:
    bulk_bytes, bulk_seconds = await _bulk(f"{base_url}/bulk?size={BULK_MESSAGE}", seconds)
    clients = [await _open(f"{base_url}/echo") for _ in range(connections)]
    try:
        started = time.perf_counter()
        deadline = started + seconds
        counts = await asyncio.gather(*(_echo(client, deadline) for client in clients))
        echo_seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return {
        "bulk_bytes": bulk_bytes,
        "bulk_seconds": bulk_seconds,
        "bulk_message_bytes": BULK_MESSAGE,
        "echo_round_trips": sum(counts),
        "echo_seconds": echo_seconds,
        "echo_connections": connections,
        "echo_message_bytes": len(ECHO_MESSAGE),
    }


async def _open(url: str) -> ClientConnection:
    return await connect(url, compression=None, max_size=None, ping_interval=None)


async def _bulk(url: str, seconds: float) -> tuple[int, float]:
    async with await _open(url) as client:
        received = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            received += len(await client.recv())
        return received, time.perf_counter() - started


async def _echo(client: ClientConnection, deadline: float) -> int:
    count = 0
    while time.perf_counter() < deadline:
        await client.send(ECHO_MESSAGE)
        await client.recv()
        count += 1
    return count
