"""The README stays true to the code: its settings table matches config.SETTINGS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefork_lb.config import SETTINGS, Setting

README = Path(__file__).resolve().parents[2] / "README.rst"


def settings_table() -> str:
    """The settings table as README.rst must contain it, rendered from config.SETTINGS."""
    rows = [
        "   * - Setting (TOML key)",
        "     - Environment variable",
        "     - Default",
        "     - Meaning",
    ]
    for setting in SETTINGS:
        rows += [
            f"   * - ``{setting.name}``",
            f"     - ``{setting.env}``",
            f"     - {setting.default_text}",
            f"     - {setting.doc}",
        ]
    return "\n".join(rows) + "\n"


def test_readme_settings_table_matches_the_code() -> None:
    """Every setting appears in the README with its variable, default and meaning, in order."""
    expected = settings_table()
    assert expected in README.read_text(), (
        "README.rst's settings table is out of date; replace it with:\n\n" + expected
    )


# One row of the settings table: setting, variable and default (the meaning follows).
_ROW = re.compile(
    r"^   \* - ``(?P<name>\w+)``\n     - ``(?P<env>PREFORK_LB_\w+)``\n     - (?P<default>.*)\n",
    re.MULTILINE,
)


def readme_rows() -> dict[str, tuple[str, str]]:
    """The README's settings table as written: setting -> (variable, default)."""
    return {m["name"]: (m["env"], m["default"]) for m in _ROW.finditer(README.read_text())}


def as_set(default_text: str) -> str:
    """A default as a user would set it: ``literal`` unwrapped, a wording in parentheses empty."""
    if default_text.startswith("("):
        return ""  # "(none)", "(the system's)": the setting left empty
    return default_text.removeprefix("``").removesuffix("``")


def test_readme_lists_exactly_the_declared_settings() -> None:
    """The README's settings table has a row for each declared setting and for nothing else."""
    assert list(readme_rows()) == [setting.name for setting in SETTINGS]


@pytest.mark.parametrize("setting", [pytest.param(s, id=s.name) for s in SETTINGS])
def test_readme_default_agrees_with_the_declared_default(setting: Setting) -> None:
    """A setting's README row gives its variable and default_text, which parses to its default."""
    assert readme_rows()[setting.name] == (setting.env, setting.default_text)
    assert setting.parse(setting.name, as_set(setting.default_text)) == setting.default


def test_readme_gives_the_two_commands() -> None:
    """The README opens its instructions with the two commands a newcomer needs."""
    text = README.read_text()
    assert "   scripts/serve " in text
    assert "   scripts/test " in text
    assert "for i in 1 2 3 4 5 6; do curl -s localhost:8000/; done" in text
