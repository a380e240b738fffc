"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefork_lb.shared import handover


@pytest.fixture
def empty_slot() -> Iterator[None]:
    """No shared state installed before the test, and none left after it."""
    handover._installed = None
    yield
    if handover._installed is not None:
        handover._installed.close()
    handover._installed = None
    handover._retired_slots.clear()
    handover._retired_stats.clear()
