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
    source: str | None = None,
) -> Reply:
    """Send one request to 127.0.0.1:port (from ``source``, a loopback alias) and read the reply."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.reason, response.getheaders(), response.read())
    finally:
        conn.close()


def send(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | list[bytes] | None = None,
    *,
    timeout: float = 20.0,
) -> Reply:
    """Send exactly these header lines (repeats and order kept, nothing added but framing).

    A list body goes out chunked, one chunk per item.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if isinstance(body, list):
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in body:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        else:
            conn.endheaders()
        response = conn.getresponse()
        return Reply(response.status, response.reason, response.getheaders(), response.read())
    finally:
        conn.close()


def get_name(port: int, timeout: float = 20.0) -> str:
    """GET / on a fresh connection (so the kernel may hand it to any worker): who answered.

    The test backends answer ``/`` with their name; anything but a 200 fails the test.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode().strip()
        assert response.status == 200, body
        return body
    finally:
        conn.close()
