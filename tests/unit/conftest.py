"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefork_lb import shared


@pytest.fixture
def empty_slot() -> Iterator[None]:
    """No shared state installed before the test, and none left after it."""
    shared._installed = None
    yield
    if shared._installed is not None:
        shared._installed.close()
    shared._installed = None
    shared._retired_slots.clear()
    shared._retired_stats.clear()
