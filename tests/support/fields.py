"""Header-field helpers shared by the test backend and the raw client."""

from __future__ import annotations


def header_tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    """Return the comma-separated tokens of every ``name`` header, lower-cased."""
    wanted = name.lower()
    return [
        token.strip().lower()
        for key, value in headers
        if key.lower() == wanted
        for token in value.split(",")
        if token.strip()
    ]
