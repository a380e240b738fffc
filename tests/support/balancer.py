"""A real prefork_lb under test: ``gunicorn -c gunicorn.conf.py`` in a child process.

The test binds the listening socket itself (127.0.0.1, ephemeral port) and
hands it to gunicorn as ``--bind fd://N``, so the port is known before the
master starts and nothing races for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment minus any PREFORK_LB_* it happens to carry, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_LB_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class ProcessEntry:
    """One line of the process table, as /proc/PID/stat gives it."""

    pid: int
    state: str
    parent: int
    group: int

    @property
    def alive(self) -> bool:
        """Running or sleeping: neither a zombie nor dead."""
        return self.state not in ("Z", "X")


def process_table() -> list[ProcessEntry]:
    """Every process on the machine (that has not vanished while being read)."""
    entries = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        entries.append(ProcessEntry(int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return entries


def child_pids(parent: int) -> list[int]:
    """Process ids of the live children of ``parent``."""
    return sorted(p.pid for p in process_table() if p.parent == parent and p.alive)


def gunicorn_command(*args: str) -> list[str]:
    """The command line the README gives, with extra gunicorn flags."""
    return [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), *args]


class BalancerProcess:
    """One gunicorn master with its workers, its log captured in a file."""

    def __init__(
        self,
        backends: Sequence[str],
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.workers = workers
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._listener.set_inheritable(True)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._final_log: str | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="prefork_lb-", suffix=".log")  # noqa: SIM115
        settings = {"PREFORK_LB_BACKENDS": ",".join(backends)} if backends else {}
        command = gunicorn_command(
            f"--bind=fd://{self._listener.fileno()}",
            f"--workers={workers}",
            "--graceful-timeout=5",
            *args,
        )
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_environ({**settings, **(env or {})}),
            pass_fds=[self._listener.fileno()],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        """The master's process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the master and its workers have logged so far."""
        if self._final_log is not None:
            return self._final_log
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (access lines are written after the reply)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 20.0) -> BalancerProcess:
        """Wait until every worker is serving; fail with the log if the master died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"balancer exited {self.process.returncode}:\n{self.log()}")
            if len(self.worker_pids()) >= self.workers and self._booted() >= self.workers:
                return self
            time.sleep(0.05)
        raise AssertionError(f"balancer not ready after {timeout}s:\n{self.log()}")

    def _booted(self) -> int:
        # Logged once the worker has loaded the app and set up its signal handlers: a
        # TERM sent before then is lost, and the master waits out its graceful timeout.
        return len(re.findall(r"prefork_lb: worker \d+ ready", self.log()))

    def worker_pids(self) -> list[int]:
        """Process ids of the master's current workers (its live children)."""
        return child_pids(self.pid)

    def stop(self, *, quick: bool = False) -> int:
        """Stop the master (TERM, then KILL if it lingers) and return its exit status.

        With ``quick`` the master gets QUIT instead, and its workers exit at once rather
        than finish what they serve: a fixture's cleanup, where a graceful stop only
        waits (gunicorn's gevent worker looks for TERM once a second). A worker still
        booting loses the signal and the master would wait out its graceful timeout,
        so after 2 s the workers, then the master, are killed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT if quick else signal.SIGTERM)
            try:
                self.process.wait(timeout=2 if quick else 15)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
        self._listener.close()
        if self._final_log is None:
            self._final_log = self.log()
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> BalancerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop(quick=True)
