"""Cross-process state: made once in the gunicorn master, inherited by every worker.

This module is the one owner of memory shared between workers. The master
calls ``install()`` from the ``on_starting`` hook, before it forks; workers
call ``installed()`` when they load the app. Because this module stays in the
master's ``sys.modules``, what it holds survives a HUP (the config file is
re-executed on HUP, an imported module is not).

The rotation counter is the file offset of an unlinked temporary file that
every process shares through one open file description, inherited across
fork. ``lseek(fd, 1, SEEK_CUR)`` is a fetch-and-add the kernel does under the
file's position lock (POSIX 2.9.7; Linux takes ``f_pos_lock`` for regular
files opened with open(2) once the file is shared), so there is no user-space
lock for a killed worker to die holding: a ``multiprocessing.Value`` lock held
by a SIGKILLed worker blocks every other worker forever.

It must be a file opened with open(2), not a memfd: memfd files skip the
position lock, and on Linux 6.18 eight processes seeking one memfd lost about
4,000 of 800,000 increments, while the same test on an open(2)ed file lost
none (tests/unit/test_shared.py keeps checking this). The file lives on
/dev/shm when it can (tmpfs: offsets up to 2**63 - 1, nothing ever written).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from prefork_lb.config import Settings


class RotationCounter:
    """A counter that every process forked after its creation advances together."""

    def __init__(self) -> None:
        # Lives as long as the counter: workers inherit it.
        self._file = tempfile.TemporaryFile(prefix="prefork_lb-", dir=_shm_dir())  # noqa: SIM115
        self._fd = self._file.fileno()

    def next(self) -> int:
        """Return the current position and advance it by one, atomically across processes."""
        return os.lseek(self._fd, 1, os.SEEK_CUR) - 1

    def peek(self) -> int:
        """Return the current position without advancing it."""
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        """Release the file (in this process only)."""
        self._file.close()


def _shm_dir() -> str | None:
    shm = "/dev/shm"  # noqa: S108 - TemporaryFile makes an unlinked 0600 file there
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


@dataclass(frozen=True, slots=True)
class SharedState:
    """What the master hands to every worker: the settings and the shared counters."""

    settings: Settings
    rotation: RotationCounter


_installed: SharedState | None = None


def install(settings: Settings) -> SharedState:
    """Create the shared state in the master, before any worker is forked."""
    global _installed  # noqa: PLW0603 - the one slot the master fills for its workers
    if _installed is not None:
        _installed.rotation.close()
    _installed = SharedState(settings=settings, rotation=RotationCounter())
    return _installed


def installed() -> SharedState:
    """Return the state the master installed, or explain how to start the balancer."""
    if _installed is None:
        raise RuntimeError(
            "prefork_lb has no shared state: start it with `gunicorn -c gunicorn.conf.py` "
            "so the master creates it before forking workers (--preload and "
            "--check-config load the app before that and are not supported)"
        )
    return _installed
