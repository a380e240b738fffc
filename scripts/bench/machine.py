"""What the figures depend on besides the code: the machine, the tools and their versions."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def tool_version(command: Sequence[str], pattern: str) -> str | None:
    """The first group of ``pattern`` in what ``command`` prints; None if it cannot say."""
    if not command or not command[0]:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def git_revision() -> str | None:
    """The commit the work tree is at, with '-dirty' when it has changes; None without git."""
    if shutil.which("git") is None:
        return None
    return tool_version(["git", "describe", "--always", "--dirty", "--abbrev=12"], r"(\S+)")


def package_versions(python: str, names: Sequence[str]) -> dict[str, str | None]:
    """Versions of installed distributions as ``python`` sees them; None for each it lacks."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    if not python or not Path(python).exists():
        return dict.fromkeys(names)
    done = subprocess.run(
        [python, "-c", code, *names], capture_output=True, text=True, timeout=30, check=False
    )
    try:
        versions: dict[str, str | None] = json.loads(done.stdout)
    except json.JSONDecodeError:
        return dict.fromkeys(names)
    return versions


def _cpu_model() -> str | None:
    """The first 'model name' of /proc/cpuinfo, if there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(nginx: str, haproxy: str, wrk: str) -> dict[str, object]:
    """Cores, memory, kernel, Python, and the versions of the tools at these paths."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": tool_version([nginx, "-v"], r"nginx/(\S+)"),
        "haproxy": tool_version([haproxy, "-v"], r"version (\S+)"),
        "wrk": tool_version([wrk, "-v"], r"wrk (?:debian/)?(\S+)"),
    }
