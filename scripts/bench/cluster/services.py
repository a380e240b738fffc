"""The cluster's processes: each started in its namespace, in a process group of its own.

``ip netns exec`` enters the namespace and then execs the command, so the
process we hold is the server itself (gunicorn's master, nginx's master,
HAProxy), and its process group holds whatever it forks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.bench.procfs import all_processes, children, process_running

STOP_TIMEOUT_S = 5.0


@dataclass
class Service:
    """One server in a namespace: its process, its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    history: list[int] = field(default_factory=list)  # earlier pids, for the report

    @property
    def pid(self) -> int:
        """The leader's process id (also its process group's)."""
        return self.process.pid

    def running(self) -> bool:
        """Whether the leader has not exited."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """What it has logged so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill_group(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group at once (master and workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self) -> None:
        """TERM to the leader (it stops its own workers); KILL the group if it lingers."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT_S)
        self.kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT_S)


def start_in(
    namespace: str,
    name: str,
    command: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start ``command`` inside ``namespace``, its output in ``log``."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return Service(name, process, log)


def workers_of(master: int) -> set[int]:
    """The live child processes of ``master`` (zombies not yet reaped left out)."""
    processes = [stat for stat in all_processes() if stat.state not in ("Z", "X")]
    return set(children(master, processes))


def exited(pid: int) -> bool:
    """Whether every thread of ``pid`` has exited, so its sockets are closed.

    A process whose main thread has exited shows as a zombie while its other
    threads are still exiting, and its files (a listening socket) close with
    the last of them: a zombie main thread alone is not enough.
    """
    try:
        threads = {int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()}
    except (FileNotFoundError, ProcessLookupError):
        return True
    return threads <= {pid} and not process_running(pid)


def wait_until(
    condition: Callable[[], bool], what: str, timeout_s: float, poll_s: float = 0.05
) -> float:
    """Poll ``condition()`` until true; the seconds it took, or TimeoutError naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not within {timeout_s:g} s: {what}")
        time.sleep(poll_s)
    return time.monotonic() - started
