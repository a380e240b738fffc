"""Which request parser gunicorn uses with the balancer's settings: the C one (gunicorn-h1c)."""

from __future__ import annotations

from pathlib import Path

import gunicorn_h1c
from gunicorn.config import Config
from gunicorn.http import message

ROOT = Path(__file__).resolve().parents[2]


def _balancer_config() -> Config:
    cfg = Config()
    namespace: dict[str, object] = {"__file__": str(ROOT / "gunicorn.conf.py")}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    for name, value in namespace.items():
        if name in cfg.settings:
            cfg.set(name, value)
    return cfg


def test_settings_ask_for_the_c_parser() -> None:
    """http_parser is "fast": a worker without gunicorn-h1c fails at start, never falls back."""
    assert _balancer_config().http_parser == "fast"


def test_gunicorn_picks_the_c_parser_with_these_settings() -> None:
    """With the balancer's settings, gunicorn parses requests with gunicorn-h1c."""
    assert message._check_fast_parser(_balancer_config()) is True
    assert message._fast_parser_module is gunicorn_h1c
