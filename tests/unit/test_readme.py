"""The README stays true to the code: its settings table matches config.SETTINGS."""

from __future__ import annotations

from pathlib import Path

from prefork_lb.config import SETTINGS

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


def test_readme_gives_the_two_commands() -> None:
    """The README opens its instructions with the two commands a newcomer needs."""
    text = README.read_text()
    assert "   scripts/serve " in text
    assert "   scripts/test " in text
    assert "for i in 1 2 3 4 5 6; do curl -s localhost:8000/; done" in text
