"""A plain HTTP client for tests: one request on a fresh connection, closed afterwards."""

from __future__ import annotations

import http.client
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """What the client received."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        """Every value of a header, case-insensitively, in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


def fetch(
    port: int,
    target: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 20.0,
) -> Reply:
    """Send one request to 127.0.0.1:port and read the whole reply."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.reason, response.getheaders(), response.read())
    finally:
        conn.close()
