"""What callgrind and gunicorn write that the instruction count needs: totals and the worker.

Pure text parsing, tested on a captured callgrind output file and gunicorn log.
"""

from __future__ import annotations

import re

# gunicorn's arbiter logs this line (at info level) for every worker it forks.
_BOOTING = re.compile(r"Booting worker with pid: (\d+)")


def parse_total_instructions(text: str) -> int:
    """The Ir total of a callgrind output file; ValueError if it has none.

    callgrind writes ``summary:`` in the header and ``totals:`` at the end, one
    figure per event named on the ``events:`` line; Ir is not always the first.
    """
    events = re.search(r"^events:[ \t]*(.+)$", text, re.MULTILINE)
    names = events.group(1).split() if events else ["Ir"]
    if "Ir" not in names:
        raise ValueError(f"callgrind counted no Ir (events: {' '.join(names)})")
    column = names.index("Ir")
    for key in ("totals", "summary"):
        line = re.search(rf"^{key}:[ \t]*(.+)$", text, re.MULTILINE)
        if line is None:
            continue
        figures = line.group(1).split()
        if len(figures) > column:
            return int(figures[column])
    raise ValueError("no 'totals:' or 'summary:' line: callgrind did not finish this file")


def worker_pid(log_text: str) -> int | None:
    """The pid of the one worker gunicorn booted; None before it has; ValueError for several.

    A second worker means the first one died, and its count would be half a run.
    """
    pids = [int(match) for match in _BOOTING.findall(log_text)]
    if len(pids) > 1:
        raise ValueError(f"gunicorn booted {len(pids)} workers (pids {pids}); expected one")
    return pids[0] if pids else None
