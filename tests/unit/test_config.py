"""Settings from the environment and the TOML file: what is accepted, how bad values are named."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from prefork_lb.config import Backend, ConfigError, Settings, load_config


def _backends(*specs: tuple[str, str, str, int]) -> tuple[Backend, ...]:
    return tuple(
        Backend(url=url, scheme=scheme, host=host, port=port) for url, scheme, host, port in specs
    )


def _with_file(tmp_path: Path, text: str, **environ: str) -> dict[str, str]:
    path = tmp_path / "prefork_lb.toml"
    path.write_text(text, encoding="utf-8")
    return {"PREFORK_LB_CONFIG": str(path), **environ}


# --- valid environment -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:9001",
            _backends(("http://127.0.0.1:9001", "http", "127.0.0.1", 9001)),
            id="one",
        ),
        pytest.param(
            "http://10.0.0.1:9001 ,  http://10.0.0.2:9002,http://10.0.0.3:9003,",
            _backends(
                ("http://10.0.0.1:9001", "http", "10.0.0.1", 9001),
                ("http://10.0.0.2:9002", "http", "10.0.0.2", 9002),
                ("http://10.0.0.3:9003", "http", "10.0.0.3", 9003),
            ),
            id="several-spaces-trailing-comma",
        ),
        pytest.param(
            "https://api.internal",
            _backends(("https://api.internal:443", "https", "api.internal", 443)),
            id="https-default-port",
        ),
        pytest.param(
            "http://api.internal",
            _backends(("http://api.internal:80", "http", "api.internal", 80)),
            id="http-default-port",
        ),
        pytest.param(
            "http://api.internal:8080/",
            _backends(("http://api.internal:8080", "http", "api.internal", 8080)),
            id="bare-slash-path-dropped",
        ),
        pytest.param(
            "HTTP://API.Internal:8080",
            _backends(("http://api.internal:8080", "http", "api.internal", 8080)),
            id="scheme-and-host-lower-cased",
        ),
        pytest.param(
            "http://[::1]:9000",
            _backends(("http://[::1]:9000", "http", "::1", 9000)),
            id="ipv6",
        ),
        pytest.param(
            "https://[2001:db8::5]",
            _backends(("https://[2001:db8::5]:443", "https", "2001:db8::5", 443)),
            id="ipv6-default-port",
        ),
    ],
)
def test_backends_from_environment(value: str, expected: tuple[Backend, ...]) -> None:
    """PREFORK_LB_BACKENDS is a comma list of URLs, each normalised to scheme://host:port."""
    settings = load_config({"PREFORK_LB_BACKENDS": value})
    assert settings.backends == expected


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        pytest.param("http://[::1]:9000", "[::1]:9000", id="ipv6-bracketed"),
        pytest.param("http://example.com", "example.com:80", id="name-default-port"),
        pytest.param("https://10.1.2.3:8443", "10.1.2.3:8443", id="ipv4"),
    ],
)
def test_backend_authority(url: str, authority: str) -> None:
    """A backend's authority is host:port with IPv6 literals in brackets."""
    (backend,) = load_config({"PREFORK_LB_BACKENDS": url}).backends
    assert backend.authority == authority


def test_defaults() -> None:
    """Settings not given take their documented defaults."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1"})
    assert settings == Settings(
        backends=_backends(("http://h:1", "http", "h", 1)),
        connect_timeout=5.0,
        read_timeout=60.0,
        trusted_proxies=(),
        preserve_host=True,
        pool_size=64,
        demo=False,
    )
    assert settings.sources == ("PREFORK_LB_BACKENDS",)


def test_environment_settings() -> None:
    """Timeouts, trusted proxies and pool size are read from their PREFORK_LB_* variables."""
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": "http://h:1",
            "PREFORK_LB_CONNECT_TIMEOUT": "0.25",
            "PREFORK_LB_READ_TIMEOUT": " 30 ",
            "PREFORK_LB_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16,10.1.2.3/8, ::1",
            "PREFORK_LB_POOL_SIZE": "8",
            "PATH": "/usr/bin",
        }
    )
    assert settings.connect_timeout == 0.25
    assert settings.read_timeout == 30.0
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.pool_size == 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1", True, id="1"),
        pytest.param("0", False, id="0"),
        pytest.param("true", True, id="true"),
        pytest.param("false", False, id="false"),
        pytest.param("yes", True, id="yes"),
        pytest.param("no", False, id="no"),
        pytest.param("on", True, id="on"),
        pytest.param("off", False, id="off"),
        pytest.param("TRUE", True, id="upper-true"),
        pytest.param(" Off ", False, id="spaced-off"),
    ],
)
def test_preserve_host_spellings(value: str, expected: bool) -> None:
    """PREFORK_LB_PRESERVE_HOST accepts 1/0, true/false, yes/no and on/off in any case."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1", "PREFORK_LB_PRESERVE_HOST": value})
    assert settings.preserve_host is expected


def test_demo_without_backends() -> None:
    """Demo mode needs no backends: the hooks start demo backends later."""
    settings = load_config({"PREFORK_LB_DEMO": "1"})
    assert settings.demo is True
    assert settings.backends == ()


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after they are built."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pool_size = 1  # type: ignore[misc]
    assert settings.pool_size == 64


# --- TOML file ---------------------------------------------------------------------------------

_FULL_FILE = """\
connect_timeout = 2
read_timeout = 30.5
preserve_host = false
pool_size = 8
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]

[[backends]]
url = "http://10.0.0.5:8080"

[[backends]]
url = "https://api.internal"
"""


def test_toml_file(tmp_path: Path) -> None:
    """The file named by PREFORK_LB_CONFIG gives [[backends]] tables and top-level settings."""
    environ = _with_file(tmp_path, _FULL_FILE)
    settings = load_config(environ)
    assert settings == Settings(
        backends=_backends(
            ("http://10.0.0.5:8080", "http", "10.0.0.5", 8080),
            ("https://api.internal:443", "https", "api.internal", 443),
        ),
        connect_timeout=2.0,
        read_timeout=30.5,
        trusted_proxies=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.168.1.1/32"),
        ),
        preserve_host=False,
        pool_size=8,
        demo=False,
    )
    assert settings.sources == (environ["PREFORK_LB_CONFIG"],)


def test_environment_overrides_file(tmp_path: Path) -> None:
    """A PREFORK_LB_* variable wins over the same setting in the file; the rest still holds."""
    environ = _with_file(
        tmp_path,
        _FULL_FILE,
        PREFORK_LB_POOL_SIZE="16",
        PREFORK_LB_BACKENDS="http://override:1",
    )
    settings = load_config(environ)
    assert settings.pool_size == 16
    assert settings.backends == _backends(("http://override:1", "http", "override", 1))
    assert settings.read_timeout == 30.5
    assert settings.preserve_host is False
    assert settings.sources == (
        environ["PREFORK_LB_CONFIG"],
        "PREFORK_LB_POOL_SIZE",
        "PREFORK_LB_BACKENDS",
    )


def test_toml_backends_as_strings(tmp_path: Path) -> None:
    """In the file, backends may also be a plain list of URL strings."""
    environ = _with_file(tmp_path, 'backends = ["http://a:1", " https://b "]\n')
    assert load_config(environ).backends == _backends(
        ("http://a:1", "http", "a", 1),
        ("https://b:443", "https", "b", 443),
    )


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "setting", "value"),
    [
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://[::1"},
            "PREFORK_LB_BACKENDS",
            "http://[::1",
            id="unparseable-url",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:99999"},
            "PREFORK_LB_BACKENDS",
            "http://h:99999",
            id="port-too-big",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:0"},
            "PREFORK_LB_BACKENDS",
            "http://h:0",
            id="port-zero",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:-1"},
            "PREFORK_LB_BACKENDS",
            "http://h:-1",
            id="port-negative",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "ftp://h"}, "PREFORK_LB_BACKENDS", "ftp://h", id="ftp-scheme"
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "h:80"}, "PREFORK_LB_BACKENDS", "h:80", id="no-scheme"
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:1/api"},
            "PREFORK_LB_BACKENDS",
            "http://h:1/api",
            id="path",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:1?x=1"},
            "PREFORK_LB_BACKENDS",
            "http://h:1?x=1",
            id="query",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:1#top"},
            "PREFORK_LB_BACKENDS",
            "http://h:1#top",
            id="fragment",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://u:p@h:1"},
            "PREFORK_LB_BACKENDS",
            "http://u:p@h:1",
            id="userinfo",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://u@h:1"},
            "PREFORK_LB_BACKENDS",
            "http://u@h:1",
            id="username",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://:80"},
            "PREFORK_LB_BACKENDS",
            "http://:80",
            id="empty-host",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://a:1,http://"},
            "PREFORK_LB_BACKENDS[1]",
            "http://",
            id="second-no-host",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_CONNECT_TIMEOUT": "-1"},
            "PREFORK_LB_CONNECT_TIMEOUT",
            "-1",
            id="timeout-negative",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_CONNECT_TIMEOUT": "0"},
            "PREFORK_LB_CONNECT_TIMEOUT",
            "0",
            id="timeout-zero",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_READ_TIMEOUT": "soon"},
            "PREFORK_LB_READ_TIMEOUT",
            "soon",
            id="timeout-word",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_READ_TIMEOUT": "nan"},
            "PREFORK_LB_READ_TIMEOUT",
            "nan",
            id="timeout-nan",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_READ_TIMEOUT": "inf"},
            "PREFORK_LB_READ_TIMEOUT",
            "inf",
            id="timeout-inf",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_READ_TIMEOUT": "1e400"},
            "PREFORK_LB_READ_TIMEOUT",
            "1e400",
            id="timeout-overflows-to-inf",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_TYPO": "1"},
            "PREFORK_LB_TYPO",
            "unknown setting",
            id="unknown-variable",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_PRESERVE_HOST": "maybe"},
            "PREFORK_LB_PRESERVE_HOST",
            "maybe",
            id="bad-bool",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "perhaps"}, "PREFORK_LB_DEMO", "perhaps", id="bad-demo-bool"
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_TRUSTED_PROXIES": "10.0.0.0/33"},
            "PREFORK_LB_TRUSTED_PROXIES",
            "10.0.0.0/33",
            id="cidr-prefix-too-long",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_TRUSTED_PROXIES": "10.0.0.1, proxy.local"},
            "PREFORK_LB_TRUSTED_PROXIES",
            "proxy.local",
            id="cidr-not-an-address",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "0"},
            "PREFORK_LB_POOL_SIZE",
            "0",
            id="pool-zero",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "-1"},
            "PREFORK_LB_POOL_SIZE",
            "-1",
            id="pool-negative",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "x"},
            "PREFORK_LB_POOL_SIZE",
            "x",
            id="pool-word",
        ),
        pytest.param(
            {"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "2.5"},
            "PREFORK_LB_POOL_SIZE",
            "2.5",
            id="pool-fraction",
        ),
    ],
)
def test_environment_errors(environ: dict[str, str], setting: str, value: str) -> None:
    """A bad environment value raises ConfigError naming the setting and the value."""
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    message = str(caught.value)
    assert setting in message
    assert value in message


def test_error_message_is_exact() -> None:
    """The message has the shape 'SETTING: what is expected, got VALUE'."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "x"})
    assert str(caught.value) == "PREFORK_LB_POOL_SIZE: must be a positive whole number, got 'x'"


def test_pool_size_superscript_digit() -> None:
    """A pool size written with a superscript digit is a ConfigError, not a bare ValueError."""
    with pytest.raises(ConfigError, match="PREFORK_LB_POOL_SIZE"):
        load_config({"PREFORK_LB_DEMO": "1", "PREFORK_LB_POOL_SIZE": "²"})


def test_backend_host_with_space() -> None:
    """A backend host containing a space is rejected at startup, naming the value."""
    with pytest.raises(ConfigError, match="http://a b:80"):
        load_config({"PREFORK_LB_BACKENDS": "http://a b:80"})


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="nothing-set"),
        pytest.param({"PREFORK_LB_BACKENDS": ""}, id="empty"),
        pytest.param({"PREFORK_LB_BACKENDS": " , ,"}, id="only-commas"),
        pytest.param({"PREFORK_LB_BACKENDS": "", "PREFORK_LB_DEMO": "off"}, id="demo-off"),
    ],
)
def test_no_backends_outside_demo(environ: dict[str, str]) -> None:
    """Without backends and without demo mode, the error tells how to set PREFORK_LB_BACKENDS."""
    with pytest.raises(ConfigError, match="no backends configured") as caught:
        load_config(environ)
    assert "PREFORK_LB_BACKENDS=http://host:port" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "setting", "value"),
    [
        pytest.param("connect_timeout = true\n", "connect_timeout", "True", id="bool-timeout"),
        pytest.param("read_timeout = -2.5\n", "read_timeout", "-2.5", id="negative-timeout"),
        pytest.param("read_timeout = nan\n", "read_timeout", "nan", id="nan-timeout"),
        pytest.param("read_timeout = inf\n", "read_timeout", "inf", id="inf-timeout"),
        pytest.param("pool_size = 0\n", "pool_size", "0", id="pool-zero"),
        pytest.param("pool_size = true\n", "pool_size", "True", id="pool-bool"),
        pytest.param("pool_size = 1.5\n", "pool_size", "1.5", id="pool-float"),
        pytest.param("preserve_host = 2\n", "preserve_host", "2", id="bool-number"),
        pytest.param("trusted_proxies = [1]\n", "trusted_proxies", "[1]", id="proxies-not-strings"),
        pytest.param("weight_typo = 1\n", "weight_typo", "unknown setting", id="unknown-key"),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nweight = 2\n',
            "backends[0]",
            "'weight'",
            id="unknown-backend-key",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\n[[backends]]\nname = "b"\n',
            "backends[1]",
            "'name'",
            id="unknown-key-second-table",
        ),
        pytest.param("[[backends]]\n", "backends[0]", "missing key 'url'", id="missing-url"),
        pytest.param("[[backends]]\nurl = 5\n", "backends[0].url", "5", id="url-not-string"),
        pytest.param(
            '[[backends]]\nurl = "ftp://a"\n', "backends[0].url", "ftp://a", id="table-bad-scheme"
        ),
        pytest.param("backends = 5\n", "backends", "5", id="backends-number"),
        pytest.param(
            '[backends]\nurl = "http://a:1"\n', "backends", "http://a:1", id="backends-one-table"
        ),
        pytest.param("backends = [5]\n", "backends[0]", "5", id="backends-list-of-numbers"),
        pytest.param(
            'backends = ["http://a:1", "http://b:2/api"]\n',
            "backends[1]",
            "http://b:2/api",
            id="string-list-with-path",
        ),
    ],
)
def test_file_errors(tmp_path: Path, text: str, setting: str, value: str) -> None:
    """A bad value in the file raises ConfigError naming the file, the setting and the value."""
    environ = _with_file(tmp_path, text, PREFORK_LB_DEMO="1")
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    message = str(caught.value)
    assert message.startswith(environ["PREFORK_LB_CONFIG"] + ": ")
    assert setting in message
    assert value in message


def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is named, with the reason, under PREFORK_LB_CONFIG."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_CONFIG": str(path)})
    assert (
        str(caught.value)
        == f"PREFORK_LB_CONFIG: cannot read {str(path)!r}: No such file or directory"
    )


def test_directory_as_file(tmp_path: Path) -> None:
    """A directory given as the config file is reported as unreadable."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_CONFIG": str(tmp_path)})
    assert str(caught.value) == f"PREFORK_LB_CONFIG: cannot read {str(tmp_path)!r}: Is a directory"


def test_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its path under PREFORK_LB_CONFIG."""
    environ = _with_file(tmp_path, "pool_size = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    message = str(caught.value)
    assert message.startswith(
        f"PREFORK_LB_CONFIG: {environ['PREFORK_LB_CONFIG']!r} is not valid TOML: "
    )


def test_file_without_backends(tmp_path: Path) -> None:
    """A file that sets no backends, outside demo mode, is refused like an empty environment."""
    environ = _with_file(tmp_path, "pool_size = 4\n")
    with pytest.raises(ConfigError, match="no backends configured"):
        load_config(environ)
