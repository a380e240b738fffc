"""What /proc says about the servers under test: liveness, children, memory, CPU time.

Parsing is kept apart from reading, so the rules (the command name in
/proc/PID/stat may hold spaces and parentheses) are tested on captured text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """The fields of one /proc/PID/stat line that the load test uses."""

    pid: int
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime, every thread included, in clock ticks


def parse_stat(text: str) -> ProcessStat:
    """The fields of a /proc/PID/stat line; ValueError if it is not one."""
    # The command name sits in parentheses and may itself hold ") ": split at the last one.
    head, paren, tail = text.rpartition(")")
    fields = tail.split()
    if not paren or "(" not in head or len(fields) < 13:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    # After the name: state(3) ppid(4) ... utime(14) stime(15), numbered as in proc(5).
    return ProcessStat(
        pid=int(head.split("(", 1)[0]),
        state=fields[0],
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def parse_status_kib(text: str, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of a /proc/PID/status text; 0 when it is absent."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def read_stat(pid: int) -> ProcessStat | None:
    """PID's /proc/PID/stat fields, or None if the process is gone."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None


def process_running(pid: int) -> bool:
    """True while PID exists and is not a zombie (an exited child not yet reaped)."""
    stat = read_stat(pid)
    return stat is not None and stat.state != "Z"


def all_processes() -> list[ProcessStat]:
    """Every process /proc shows now (those that exit while it is read are left out)."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                found.append(stat)
    return found


def children(parent: int, processes: list[ProcessStat]) -> list[int]:
    """The PIDs among ``processes`` whose parent is ``parent``, in order."""
    return sorted(stat.pid for stat in processes if stat.ppid == parent)


def process_tree(root: int, processes: list[ProcessStat]) -> list[ProcessStat]:
    """``root`` and all its descendants among ``processes``, root first; empty if it is gone."""
    by_parent: dict[int, list[ProcessStat]] = {}
    own = None
    for stat in processes:
        by_parent.setdefault(stat.ppid, []).append(stat)
        if stat.pid == root:
            own = stat
    if own is None:
        return []
    tree, index = [own], 0
    while index < len(tree):
        tree += sorted(by_parent.get(tree[index].pid, []), key=lambda stat: stat.pid)
        index += 1
    return tree


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status; 0 if the process is gone."""
    try:
        return parse_status_kib((PROC / str(pid) / "status").read_text(), field)
    except (OSError, ValueError):
        return 0


def workers_memory(master: int) -> dict[str, object]:
    """Summed resident memory (now, and the peak so far) of the master's children, in KiB."""
    workers = children(master, all_processes())
    return {
        "workers": len(workers),
        "pids": workers,
        "rss_kib": sum(status_kib(pid, "VmRSS") for pid in workers),
        "peak_kib": sum(status_kib(pid, "VmHWM") for pid in workers),
    }


def cpu_sample(root: int) -> dict[str, object]:
    """CPU time used so far by ``root`` and its descendants (a server's master and workers).

    ``ticks`` sums user and system time over the tree, in units of
    ``ticks_per_s``; two samples around a run give the CPU it cost (see
    ``results.cpu_us_per_request``).
    """
    tree = process_tree(root, all_processes())
    return {
        "pids": [stat.pid for stat in tree],
        "ticks": sum(stat.cpu_ticks for stat in tree),
        "ticks_per_s": os.sysconf("SC_CLK_TCK"),
    }
