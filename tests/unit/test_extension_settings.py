"""The settings extensions add: ``extensions``, ``extension_options`` and a backend's ``name``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork_lb.config import ConfigError, load_config

BACKENDS = {"PREFORK_LB_BACKENDS": "http://10.0.0.1:80"}

FILE = """
backends = ["http://10.0.0.1:80"]
extensions = ["my_ext:Auth", "other.mod:make"]

[extension_options."my_ext:Auth"]
keys = ["a", "b"]
limit = 3
"""


def from_file(tmp_path: Path, text: str) -> dict[str, str]:
    """An environment naming a TOML file with ``text``."""
    path = tmp_path / "prefork_lb.toml"
    path.write_text(text, encoding="utf-8")
    return {"PREFORK_LB_CONFIG": str(path)}


def test_extensions_and_their_options_come_from_the_file(tmp_path: Path) -> None:
    """A TOML list of extensions and a table of options per extension; none gives {}."""
    settings = load_config(from_file(tmp_path, FILE))
    assert settings.extensions == ("my_ext:Auth", "other.mod:make")
    assert settings.options_for("my_ext:Auth") == {"keys": ["a", "b"], "limit": 3}
    assert settings.options_for("other.mod:make") == {}


def test_extensions_come_from_the_environment() -> None:
    """PREFORK_LB_EXTENSIONS is comma-separated; PREFORK_LB_EXTENSION_OPTIONS is JSON."""
    settings = load_config(
        {
            **BACKENDS,
            "PREFORK_LB_EXTENSIONS": " a:B , c.d:e.f",
            "PREFORK_LB_EXTENSION_OPTIONS": '{"a:B": {"rate": 5}}',
        }
    )
    assert settings.extensions == ("a:B", "c.d:e.f")
    assert settings.options_for("a:B") == {"rate": 5}


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        pytest.param({"PREFORK_LB_EXTENSIONS": "nocolon"}, "module:attribute", id="no-colon"),
        pytest.param({"PREFORK_LB_EXTENSIONS": "a:b:c"}, "module:attribute", id="two-colons"),
        pytest.param({"PREFORK_LB_EXTENSIONS": "a:B,a:B"}, "listed twice", id="twice"),
        pytest.param(
            {"PREFORK_LB_EXTENSION_OPTIONS": "{not json"}, "JSON object", id="options-not-json"
        ),
        pytest.param(
            {"PREFORK_LB_EXTENSION_OPTIONS": '{"a:B": 1}'}, "tables", id="options-not-a-table"
        ),
        pytest.param(
            {"PREFORK_LB_EXTENSION_OPTIONS": '{"a:B": {}}'},
            "not one of the extensions",
            id="options-for-an-unlisted-extension",
        ),
    ],
)
def test_bad_extension_settings_stop_the_start(environ: dict[str, str], words: str) -> None:
    """A malformed extension name or options raise ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=words):
        load_config({**BACKENDS, **environ})


def test_a_backend_is_named_host_port_unless_it_has_a_name() -> None:
    """A backend's name defaults to its host:port; the ``name`` option sets it."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://10.0.0.1:80 name=canary, http://h:81"})
    assert [backend.name for backend in settings.backends] == ["canary", "h:81"]


@pytest.mark.parametrize(
    ("backends", "words"),
    [
        pytest.param("http://a:1 name=x, http://b:1 name=x", "already has this name", id="twice"),
        pytest.param("http://a:1 name=b:1, http://b:1", "already has this name", id="as-default"),
        pytest.param("http://a:1 name=-x", "letters, digits", id="bad-first-character"),
    ],
)
def test_backend_names_must_be_valid_and_unique(backends: str, words: str) -> None:
    """Two backends with one name, or a malformed name, raise ConfigError."""
    with pytest.raises(ConfigError, match=words):
        load_config({"PREFORK_LB_BACKENDS": backends})
