"""The ``state_file``: operators' changes kept across reloads and restarts.

The shell around ``runtime``'s format. Every change rewrites the whole file
atomically (a temporary file beside it, fsync, rename, fsync of the
directory), under a lock file so that two workers writing at once cannot
leave the older of their two views in place. The master reads it at start
and on HUP; a missing file is no state, a corrupt one is logged and ignored.

Backends are saved by name, DNS addresses as ``ip:port``. A saved address
that DNS does not give at the read waits for it (``PendingStates``, up to
``runtime.PENDING_SECONDS``), and stays in the file meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator

from prefork_lb.runtime import PENDING_SECONDS, parse_state_file, render_state_file
from prefork_lb.shared import HealthTable, PendingStates

log = logging.getLogger("gunicorn.error").getChild("prefork_lb")


def save_state(
    path: str, names: tuple[str, ...], table: HealthTable, pending: PendingStates | None = None
) -> None:
    """Write the admin state of every backend in ``table`` to ``path``, atomically.

    ``names``: each backend's name now ("" for a DNS slot without an address);
    ``pending``: the saved states still waiting for their address, kept.
    """
    directory = os.path.dirname(path) or "."
    with _locked(path):
        # Read under the file lock: the last writer writes the newest rows.
        _, rows = table.snapshot()
        waiting = pending.waiting(time.monotonic()) if pending is not None else ()
        text = render_state_file(names, rows, waiting)
        fd, temporary = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def load_state(
    path: str,
    names: tuple[str, ...],
    table: HealthTable,
    pending: PendingStates | None = None,
) -> int:
    """Apply the saved state in ``path`` to ``table``; return how many backends it set.

    ``names``: each backend's name now ("" for a DNS slot without an
    address). With ``pending`` (some pool finds its backends through DNS),
    the states of addresses not present now wait there for DNS to give them.
    Never raises for the file's sake: a missing file is no state, an
    unreadable or corrupt one is logged and ignored.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as err:
        log.error("state_file %s cannot be read, ignored: %s", path, err)
        return 0
    wall_now = time.time()  # one reading: what expired and what is left agree
    try:
        changes, waiting, warnings = parse_state_file(
            text, names, dns=pending is not None, now=wall_now
        )
    except ValueError as err:
        log.error("state_file %s is corrupt, ignored: %s", path, err)
        return 0
    for warning in warnings:
        log.warning("state_file %s: %s", path, warning)
    for change in changes:
        table.update(change.index, change.applied)
    if pending is not None:
        dropped = pending.load(waiting, time.monotonic(), wall_now)
        for saved in waiting:
            left = saved.since + PENDING_SECONDS - wall_now
            told = (
                "ignored (more waiting addresses than DNS slots)"
                if saved in dropped
                else f"waits for it {left:.0f} s more (up to {PENDING_SECONDS:.0f} s in all)"
            )
            log.warning(
                "state_file %s: address %s is not in DNS now; its saved state %s %s",
                path,
                saved.name,
                saved.state.label,
                told,
            )
    return len(changes)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
