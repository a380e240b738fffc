"""Running a test's code in a forked child, as a worker process would."""

from __future__ import annotations

import os
from collections.abc import Callable


def fork_running(body: Callable[[], None]) -> int:
    """Fork a child that runs ``body`` and exits 0 (1 if it raised); return its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    """Wait for the child ``pid``; its exit code, or minus the signal that ended it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
