"""Drills in namespaces of their own: starting one (``unshare``), and inside it its kernel
settings and its listening sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.balancer import ROOT

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def run_unshared(
    namespaces: Sequence[str], module: str, arguments: Sequence[str], what: str, timeout: float
) -> dict[str, Any]:
    """For a test: run ``python -m module ARGUMENTS`` under ``unshare NAMESPACES`` (root) and
    return the JSON object it prints; fail naming ``what`` if it fails or outlasts ``timeout``.
    """
    unshare = shutil.which("unshare")
    assert unshare is not None, (
        f"{what} needs unshare (util-linux, run as root): apt-get install util-linux"
    )
    process = subprocess.Popen(
        [unshare, *namespaces, "--", sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group: on a timeout the drill's gunicorns go with it.
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"{what} did not end in {timeout} s:\n{err}") from None
    assert process.returncode == 0, f"{what} failed ({process.returncode}):\n{err}"
    report: dict[str, Any] = json.loads(out)
    return report


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
