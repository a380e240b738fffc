"""Inside a network namespace of a drill's own: its kernel settings and its listening sockets."""

from __future__ import annotations

from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def apply_sysctl_file(path: Path) -> dict[str, str]:
    """Write each ``key = value`` of a sysctl.d file under /proc/sys; return what was set."""
    applied = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        Path("/proc/sys", *key.split(".")).write_text(value + "\n")
        applied[key] = value
    return applied


def _listeners() -> list[tuple[str, int]]:
    """(address in /proc's hex, port) of every listening IPv4 TCP socket in this namespace."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == _LISTEN:
            address, port = fields[1].rsplit(":", 1)
            found.append((address, int(port, 16)))
    return found


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` in this network namespace."""
    return sum(1 for _, bound in _listeners() if bound == port)


def listens_on_any_address(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:``port``, as a container's port must."""
    return ("00000000", port) in _listeners()
