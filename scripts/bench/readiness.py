"""Free ports for the servers, and waiting until a server answers."""

from __future__ import annotations

import http.client
import os
import re
import socket
import time

from scripts.bench.procfs import process_running


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel considers free now (held open together, so all differ)."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [sock.getsockname()[1] for sock in listeners]
    for sock in listeners:
        sock.close()
    return ports


def split_url(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of an ``http://host:port[/path]`` URL; None for any other URL."""
    match = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)?", url)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), match.group(3) or "/"


def wait_ready(url: str, pid: int, timeout_s: float) -> str | None:
    """Wait until ``GET url`` answers 200; None when it does, else why it never did."""
    parts = split_url(url)
    if parts is None:
        return f"not an http://host:port URL: {url}"
    host, port, path = parts
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer"
    while time.monotonic() < deadline:
        if not process_running(pid):
            return "the process exited"
        # http.client, not urllib: urllib would honour an http_proxy setting.
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", path, headers=extra_header())
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return None
            last_problem = f"it answered {response.status}"
        except (OSError, http.client.HTTPException) as err:
            last_problem = f"{type(err).__name__}: {err}"
        finally:
            conn.close()
        time.sleep(0.1)
    return f"no 200 within {timeout_s:g} s ({last_problem})"


def extra_header() -> dict[str, str]:
    """The header ``LOADTEST_HEADER="Name: value"`` asks every request to carry (wrk's too)."""
    name, colon, value = os.environ.get("LOADTEST_HEADER", "").partition(":")
    return {name.strip(): value.strip()} if colon and name.strip() else {}
