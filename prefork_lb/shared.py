"""Cross-process state: made once in the gunicorn master, inherited by every worker.

This module is the one owner of memory shared between workers. The master
calls ``install()`` from the ``on_starting`` hook, before it forks; workers
call ``installed()`` when they load the app. Because this module stays in the
master's ``sys.modules``, what it holds survives a HUP (the config file is
re-executed on HUP, an imported module is not).

The rotation counter is the offset of a memfd that every process shares
through one open file description. ``lseek(fd, 1, SEEK_CUR)`` is an atomic
fetch-and-add done by the kernel under the file's position lock (POSIX 2.9.7;
Linux since 3.14), so there is no user-space lock for a killed worker to die
holding: a ``multiprocessing.Value`` lock held by a SIGKILLed worker blocks
every other worker forever. The offset of a memfd can grow to 2**63 - 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prefork_lb.config import Settings


class RotationCounter:
    """A counter that every process forked after its creation advances together."""

    def __init__(self) -> None:
        self._fd = os.memfd_create("prefork_lb-rotation")

    def next(self) -> int:
        """Return the current position and advance it by one, atomically across processes."""
        return os.lseek(self._fd, 1, os.SEEK_CUR) - 1

    def peek(self) -> int:
        """Return the current position without advancing it."""
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        """Release the file descriptor (in this process only)."""
        os.close(self._fd)


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
            "so the master creates it before forking workers"
        )
    return _installed
