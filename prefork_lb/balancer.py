"""Backend selection: pure decisions, no I/O.

The rotation position comes from the counter every worker shares
(``shared.RotationCounter``); this module only turns a position into a
backend, so that any ``n`` consecutive positions visit each of ``n`` backends
exactly once, whichever worker drew them.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefork_lb.config import Backend
from prefork_lb.errors import NoBackendAvailable


def pick_backend(backends: Sequence[Backend], position: int) -> Backend:
    """Return the backend for this rotation position (round robin)."""
    if not backends:
        raise NoBackendAvailable("no backend is configured or usable")
    return backends[position % len(backends)]
