"""HAProxy's runtime API over its stats socket: server states, counters, maintenance."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

SOCKET_TIMEOUT_S = 2.0


def parse_show_stat(text: str, backend: str) -> dict[str, dict[str, str]]:
    """The rows of ``show stat`` CSV for the servers of ``backend``, by server name."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not the output of 'show stat': {text[:80]!r}")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    return {
        row["svname"]: row
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def command(stats_socket: Path, line: str) -> str:
    """Send one command; HAProxy's whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT_S)
        sock.connect(str(stats_socket))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_rows(stats_socket: Path, backend: str) -> dict[str, dict[str, str]]:
    """Each server's row of ``show stat``: status (UP, DOWN, MAINT...), stot, econ, wredis."""
    return parse_show_stat(command(stats_socket, "show stat"), backend)


def set_state(stats_socket: Path, backend: str, server: str, state: str) -> None:
    """``set server BACKEND/SERVER state ready|drain|maint``; ValueError if refused."""
    answer = command(stats_socket, f"set server {backend}/{server} state {state}").strip()
    if answer:
        raise ValueError(f"HAProxy refused 'set server {backend}/{server} state {state}': {answer}")
