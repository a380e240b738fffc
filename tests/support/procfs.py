"""What /proc says about a process: its memory and its open file descriptors."""

from __future__ import annotations

import os
from pathlib import Path


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))
