"""The declaration of one setting: its names, its parser, its default and its documentation.

Every setting is declared once, in ``settings_table.py``; the environment
variable's name and the README's wording of the default come from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefork_lb.values import IPNetwork

ENV_PREFIX = "PREFORK_LB_"
CONFIG_FILE_ENV = "PREFORK_LB_CONFIG"


@dataclass(frozen=True, slots=True)
class Setting:
    """The declaration of one setting: its names, parser, default and documentation.

    ``default`` is the typed value, as ``parse`` returns it; the dataclasses
    of ``settings_types.py`` take their defaults from it. ``wording`` is for a default that reads
    better in other words than its value's (``1g`` for 1073741824); the tests
    check that it parses back to ``default``.
    """

    name: str
    parse: Callable[[str, object], Any]
    default: Any
    doc: str
    wording: str = ""

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def default_text(self) -> str:
        """The default as the README's settings table gives it."""
        return self.wording or _as_written(self.default)


def _as_written(value: object) -> str:
    """A default as a user would set it (reStructuredText: strings are literals)."""
    if value is None or (isinstance(value, str | tuple) and not value):
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(_as_written(item) for item in value)
    if isinstance(value, str):
        return f"``{value}``"
    if isinstance(value, IPNetwork) and value.num_addresses == 1:
        return str(value.network_address)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
