"""Settings from the environment and the TOML file: what is accepted, how bad values are named."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
import trustme

from prefork_lb.config import (
    SETTINGS,
    Backend,
    ConfigError,
    HealthCheck,
    Settings,
    doubtful_settings,
    inherit_settings,
    load_config,
    parse_backend_url,
)


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
        backend_tls_verify=True,
        backend_ca_bundle="",
        demo=False,
        policy="round_robin",
        max_fails=1,
        fail_timeout=10.0,
        health_check=False,
        health_path="/",
        health_interval=2.0,
        health_timeout=1.0,
        health_status=(200, 399),
        health_rise=2,
        health_fall=3,
        retries=2,
        retry_timeout=90.0,
        fail_open=False,
        slow_start=0.0,
        admin_path="/_prefork_lb",
        admin_allow=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
    )
    assert settings.sources == ("PREFORK_LB_BACKENDS",)
    (backend,) = settings.backends
    assert (backend.weight, backend.backup, backend.max_fails, backend.fail_timeout) == (
        1,
        False,
        1,
        10.0,
    )
    assert backend.check == HealthCheck(
        enabled=False, path="/", interval=2.0, timeout=1.0, status=(200, 399), rise=2, fall=3
    )


def test_settings_fields_are_the_declared_settings() -> None:
    """Settings has one field per declared setting, in order, whose default is the declared one."""
    derived = ("dns_groups", "sources")  # made by load_config, not set by anyone
    fields = [f for f in dataclasses.fields(Settings) if f.name not in derived]
    assert [(f.name, f.default) for f in fields] == [(s.name, s.default) for s in SETTINGS]


def test_backend_defaults_are_the_inherited_ones() -> None:
    """A backend made without options has exactly what it inherits from the default settings."""
    backend = parse_backend_url("test", "http://h:1")
    assert inherit_settings(backend, Settings()) == backend


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
            '[[backends]]\nurl = "http://a:1"\nwieght = 2\n',
            "backends[0]",
            "'wieght' (known keys: url, backup, fail_timeout, health_check",
            id="unknown-backend-key",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nweight = 0\n',
            "backends[0].weight",
            "from 1 to 1000, got 0",
            id="backend-weight-zero",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nweight = true\n',
            "backends[0].weight",
            "got True",
            id="backend-weight-bool",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nweight = 2.5\n',
            "backends[0].weight",
            "got 2.5",
            id="backend-weight-float",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nbackup = "maybe"\n',
            "backends[0].backup",
            "got 'maybe'",
            id="backend-backup-word",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nhealth_path = "healthz"\n',
            "backends[0].health_path",
            "got 'healthz'",
            id="backend-health-path-no-slash",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nhealth_status = 600\n',
            "backends[0].health_status",
            "got 600",
            id="backend-health-status-600",
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\nmax_fails = -1\n',
            "backends[0].max_fails",
            "got -1",
            id="backend-max-fails-negative",
        ),
        pytest.param("health_status = 99\n", "health_status", "got 99", id="status-int-too-low"),
        pytest.param("health_status = true\n", "health_status", "got True", id="status-bool"),
        pytest.param(
            "health_status = [200, 399]\n", "health_status", "got [200, 399]", id="status-list"
        ),
        pytest.param("policy = 1\n", "policy", "got 1", id="policy-number"),
        pytest.param("admin_path = false\n", "admin_path", "got False", id="admin-path-bool"),
        pytest.param("slow_start = -1\n", "slow_start", "got -1", id="slow-start-negative"),
        pytest.param("retries = -1\n", "retries", "got -1", id="retries-negative"),
        pytest.param("fail_open = 1\n", "fail_open", "got 1", id="fail-open-number"),
        pytest.param(
            'admin_allow = ["localhost"]\n', "admin_allow", "got 'localhost'", id="admin-allow-name"
        ),
        pytest.param(
            '[[backends]]\nurl = "http://a:1"\n[[backends]]\nnick = "b"\n',
            "backends[1]",
            "'nick'",
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


def test_file_not_utf8(tmp_path: Path) -> None:
    """A file with bytes that are not UTF-8 is a ConfigError naming the file, not a traceback."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\nbackends = ["http://a:1"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_CONFIG": str(path)})
    assert str(caught.value).startswith(f"PREFORK_LB_CONFIG: {str(path)!r} is not UTF-8 (byte 5")


def test_file_without_backends(tmp_path: Path) -> None:
    """A file that sets no backends, outside demo mode, is refused like an empty environment."""
    environ = _with_file(tmp_path, "pool_size = 4\n")
    with pytest.raises(ConfigError, match="no backends configured"):
        load_config(environ)


# --- balancing, failover and health-check settings -------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param("POLICY", "least_conn", "policy", "least_conn", id="policy-least-conn"),
        pytest.param("POLICY", " round_robin ", "policy", "round_robin", id="policy-spaced"),
        pytest.param("MAX_FAILS", "0", "max_fails", 0, id="max-fails-zero"),
        pytest.param("MAX_FAILS", "5", "max_fails", 5, id="max-fails-five"),
        pytest.param("FAIL_TIMEOUT", "2.5", "fail_timeout", 2.5, id="fail-timeout"),
        pytest.param("HEALTH_CHECK", "yes", "health_check", True, id="health-check-on"),
        pytest.param(
            "HEALTH_PATH", "/healthz?full=1", "health_path", "/healthz?full=1", id="path-query"
        ),
        pytest.param("HEALTH_PATH", " /ping ", "health_path", "/ping", id="path-spaced"),
        pytest.param("HEALTH_INTERVAL", "0.5", "health_interval", 0.5, id="interval"),
        pytest.param("HEALTH_TIMEOUT", "0.25", "health_timeout", 0.25, id="health-timeout"),
        pytest.param("HEALTH_STATUS", "200-299", "health_status", (200, 299), id="status-range"),
        pytest.param("HEALTH_STATUS", "204", "health_status", (204, 204), id="status-single"),
        pytest.param(
            "HEALTH_STATUS", " 200 - 204 ", "health_status", (200, 204), id="status-spaced"
        ),
        pytest.param("HEALTH_STATUS", "100-599", "health_status", (100, 599), id="status-widest"),
        pytest.param("HEALTH_STATUS", "302-302", "health_status", (302, 302), id="status-one-wide"),
        pytest.param("HEALTH_RISE", "1", "health_rise", 1, id="rise"),
        pytest.param("HEALTH_FALL", "5", "health_fall", 5, id="fall"),
        pytest.param("RETRIES", "0", "retries", 0, id="retries-zero"),
        pytest.param("RETRIES", "3", "retries", 3, id="retries-three"),
        pytest.param("RETRY_TIMEOUT", "30", "retry_timeout", 30.0, id="retry-timeout"),
        pytest.param("FAIL_OPEN", "on", "fail_open", True, id="fail-open"),
        pytest.param("SLOW_START", "0", "slow_start", 0.0, id="slow-start-off"),
        pytest.param("SLOW_START", "30", "slow_start", 30.0, id="slow-start-on"),
        pytest.param("ADMIN_PATH", "/admin", "admin_path", "/admin", id="admin-path"),
        pytest.param("ADMIN_PATH", "/lb/admin/", "admin_path", "/lb/admin", id="admin-trailing"),
        pytest.param("ADMIN_PATH", "off", "admin_path", "", id="admin-off"),
        pytest.param("ADMIN_PATH", " OFF ", "admin_path", "", id="admin-off-upper"),
        pytest.param("ADMIN_PATH", "", "admin_path", "", id="admin-empty"),
        pytest.param(
            "ADMIN_ALLOW",
            "10.0.0.0/8, 2001:db8::1",
            "admin_allow",
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1/128")),
            id="admin-allow",
        ),
        pytest.param("ADMIN_ALLOW", "", "admin_allow", (), id="admin-allow-nobody"),
        pytest.param("READY_PATH", "/healthz/ready", "ready_path", "/healthz/ready", id="ready"),
        pytest.param("READY_PATH", "off", "ready_path", "", id="ready-off"),
        pytest.param("LIVE_PATH", "", "live_path", "", id="live-empty"),
        pytest.param("LIVE_PATH", "/live/", "live_path", "/live/", id="live-exact"),
    ],
)
def test_failover_settings_from_environment(
    variable: str, value: str, attribute: str, expected: object
) -> None:
    """Policy, failure, health-check, retry and admin settings are read from PREFORK_LB_*."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1", f"PREFORK_LB_{variable}": value})
    assert getattr(settings, attribute) == expected


def test_failover_settings_from_file(tmp_path: Path) -> None:
    """The file sets the same settings with TOML types; a bare integer status is a range of one."""
    environ = _with_file(
        tmp_path,
        """\
policy = "least_conn"
max_fails = 0
fail_timeout = 30
health_check = true
health_path = "/healthz"
health_interval = 5
health_timeout = 0.5
health_status = 204
health_rise = 3
health_fall = 2
retries = 1
retry_timeout = 4.5
fail_open = true
slow_start = 60
admin_path = "/_lb/"
admin_allow = ["10.1.0.0/16"]
backends = ["http://a:1"]
""",
    )
    settings = load_config(environ)
    assert settings.policy == "least_conn"
    assert (settings.max_fails, settings.fail_timeout) == (0, 30.0)
    assert settings.health_check is True
    assert settings.health_path == "/healthz"
    assert (settings.health_interval, settings.health_timeout) == (5.0, 0.5)
    assert settings.health_status == (204, 204)
    assert (settings.health_rise, settings.health_fall) == (3, 2)
    assert (settings.retries, settings.retry_timeout) == (1, 4.5)
    assert settings.fail_open is True
    assert settings.slow_start == 60.0
    assert settings.admin_path == "/_lb"
    assert settings.admin_allow == (ipaddress.ip_network("10.1.0.0/16"),)
    assert settings.backends[0].check == HealthCheck(
        enabled=True, path="/healthz", interval=5.0, timeout=0.5, status=(204, 204), rise=3, fall=2
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param("POLICY", "random", "must be one of round_robin, least_conn", id="policy"),
        pytest.param("POLICY", "LEAST_CONN", "got 'LEAST_CONN'", id="policy-upper"),
        pytest.param("MAX_FAILS", "-1", "got '-1'", id="max-fails-negative"),
        pytest.param("MAX_FAILS", "1.5", "got '1.5'", id="max-fails-fraction"),
        pytest.param("MAX_FAILS", "x", "got 'x'", id="max-fails-word"),
        pytest.param("FAIL_TIMEOUT", "0", "got '0'", id="fail-timeout-zero"),
        pytest.param("HEALTH_CHECK", "maybe", "got 'maybe'", id="health-check-word"),
        pytest.param("HEALTH_PATH", "healthz", "got 'healthz'", id="path-no-slash"),
        pytest.param("HEALTH_PATH", "", "got ''", id="path-empty"),
        pytest.param("HEALTH_PATH", "/a b", "got '/a b'", id="path-space"),
        pytest.param("HEALTH_PATH", "/a#b", "got '/a#b'", id="path-fragment"),
        pytest.param("HEALTH_PATH", "/caf\u00e9", "got '/caf\u00e9'", id="path-non-ascii"),
        pytest.param("HEALTH_PATH", "/a\tb", "got '/a\\tb'", id="path-control"),
        pytest.param("HEALTH_INTERVAL", "0", "got '0'", id="interval-zero"),
        pytest.param("HEALTH_TIMEOUT", "-1", "got '-1'", id="health-timeout-negative"),
        pytest.param("HEALTH_STATUS", "99", "got '99'", id="status-too-low"),
        pytest.param("HEALTH_STATUS", "600", "got '600'", id="status-too-high"),
        pytest.param("HEALTH_STATUS", "200-600", "got '200-600'", id="status-high-end-too-high"),
        pytest.param("HEALTH_STATUS", "300-200", "got '300-200'", id="status-reversed"),
        pytest.param("HEALTH_STATUS", "2xx", "got '2xx'", id="status-pattern"),
        pytest.param("HEALTH_STATUS", "200-", "got '200-'", id="status-open-range"),
        pytest.param("HEALTH_STATUS", "200,204", "got '200,204'", id="status-list"),
        pytest.param(
            "HEALTH_STATUS",
            "\u0662\u0660\u0660",
            "got '\u0662\u0660\u0660'",
            id="status-arabic-digits",
        ),
        pytest.param("HEALTH_RISE", "0", "got '0'", id="rise-zero"),
        pytest.param("HEALTH_FALL", "0", "got '0'", id="fall-zero"),
        pytest.param("RETRIES", "-1", "got '-1'", id="retries-negative"),
        pytest.param("RETRY_TIMEOUT", "0", "got '0'", id="retry-timeout-zero"),
        pytest.param("FAIL_OPEN", "2", "got '2'", id="fail-open-number"),
        pytest.param("SLOW_START", "-1", "got '-1'", id="slow-start-negative"),
        pytest.param("SLOW_START", "inf", "got 'inf'", id="slow-start-inf"),
        pytest.param("SLOW_START", "nan", "got 'nan'", id="slow-start-nan"),
        pytest.param("ADMIN_PATH", "admin", "got 'admin'", id="admin-no-slash"),
        pytest.param("ADMIN_PATH", "/", "got '/'", id="admin-root"),
        pytest.param("ADMIN_PATH", "/a?b", "got '/a?b'", id="admin-query"),
        pytest.param("ADMIN_PATH", "/a#b", "got '/a#b'", id="admin-fragment"),
        pytest.param("ADMIN_PATH", "/a b", "got '/a b'", id="admin-space"),
        pytest.param("ADMIN_ALLOW", "localhost", "got 'localhost'", id="admin-allow-name"),
    ],
)
def test_failover_setting_errors(variable: str, value: str, expected: str) -> None:
    """A bad policy, failure, health-check, retry or admin value is named with the setting."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_DEMO": "1", f"PREFORK_LB_{variable}": value})
    message = str(caught.value)
    assert message.startswith(f"PREFORK_LB_{variable}: ")
    assert expected in message


# --- per-backend options -----------------------------------------------------------------------


def _backend(url: str, host: str, port: int, **options: object) -> Backend:
    return dataclasses.replace(
        Backend(url=url, scheme="http", host=host, port=port),
        **options,  # type: ignore[arg-type]
    )


def test_backend_options_from_environment() -> None:
    """In PREFORK_LB_BACKENDS a URL may be followed by key=value options or the word backup."""
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": "http://10.0.0.5:8080 weight=5, http://10.0.0.6:8080, "
            "http://10.0.0.9:8080 backup"
        }
    )
    assert settings.backends == (
        _backend("http://10.0.0.5:8080", "10.0.0.5", 8080, weight=5),
        _backend("http://10.0.0.6:8080", "10.0.0.6", 8080),
        _backend("http://10.0.0.9:8080", "10.0.0.9", 8080, backup=True),
    )


def test_every_backend_option_from_environment() -> None:
    """Every per-backend option is accepted in the environment and lands in the Backend."""
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": "http://a:1 weight=1000 backup=no max_fails=0 "
            "fail_timeout=2.5 health_check=on health_path=/up?deep=1 health_interval=0.5 "
            "health_timeout=0.2 health_status=200-204 health_rise=4 health_fall=1"
        }
    )
    assert settings.backends == (
        _backend(
            "http://a:1",
            "a",
            1,
            weight=1000,
            backup=False,
            max_fails=0,
            fail_timeout=2.5,
            check=HealthCheck(
                enabled=True,
                path="/up?deep=1",
                interval=0.5,
                timeout=0.2,
                status=(200, 204),
                rise=4,
                fall=1,
            ),
        ),
    )


def test_backend_options_from_file(tmp_path: Path) -> None:
    """[[backends]] tables take the same options as keys, and may mix with plain URL strings."""
    environ = _with_file(
        tmp_path,
        """\
backends = [
    { url = "http://a:1", weight = 3, health_check = true, health_path = "/healthz" },
    "http://b:2",
    { url = "http://c:3", backup = true, health_status = 204, max_fails = 0 },
]
""",
    )
    assert load_config(environ).backends == (
        _backend(
            "http://a:1",
            "a",
            1,
            weight=3,
            check=HealthCheck(enabled=True, path="/healthz"),
        ),
        _backend("http://b:2", "b", 2),
        _backend(
            "http://c:3", "c", 3, backup=True, max_fails=0, check=HealthCheck(status=(204, 204))
        ),
    )


def test_backend_option_overrides_global(tmp_path: Path) -> None:
    """A backend's own option wins; options it does not set come from the global settings."""
    environ = _with_file(
        tmp_path,
        """\
health_check = true
health_path = "/global"
max_fails = 4

[[backends]]
url = "http://a:1"
health_path = "/own"
max_fails = 0
health_fall = 7

[[backends]]
url = "http://b:2"
""",
        # Globals from the environment apply to backends from the file, and win over the file.
        PREFORK_LB_HEALTH_INTERVAL="9",
        PREFORK_LB_HEALTH_PATH="/env",
    )
    a, b = load_config(environ).backends
    assert (a.max_fails, a.fail_timeout) == (0, 10.0)
    assert a.check == HealthCheck(enabled=True, path="/own", interval=9.0, fall=7)
    assert (b.max_fails, b.fail_timeout) == (4, 10.0)
    assert b.check == HealthCheck(enabled=True, path="/env", interval=9.0)


def test_backend_options_see_globals_from_file(tmp_path: Path) -> None:
    """Backends from the environment inherit global settings from the file."""
    environ = _with_file(
        tmp_path,
        "fail_timeout = 3\nhealth_rise = 5\n",
        PREFORK_LB_BACKENDS="http://a:1 health_rise=1, http://b:2",
    )
    a, b = load_config(environ).backends
    assert (a.fail_timeout, a.check.rise) == (3.0, 1)
    assert (b.fail_timeout, b.check.rise) == (3.0, 5)


@pytest.mark.parametrize(
    ("option", "raws", "field", "values"),
    [
        pytest.param("max_fails", ("3", "0"), "max_fails", (3, 0), id="max-fails"),
        pytest.param("fail_timeout", ("3", "7"), "fail_timeout", (3.0, 7.0), id="fail-timeout"),
        pytest.param("health_check", ("0", "1"), "check.enabled", (False, True), id="health-check"),
        pytest.param("health_path", ("/g", "/x"), "check.path", ("/g", "/x"), id="health-path"),
        pytest.param(
            "health_interval", ("3", "7"), "check.interval", (3.0, 7.0), id="health-interval"
        ),
        pytest.param(
            "health_timeout", ("3", "7"), "check.timeout", (3.0, 7.0), id="health-timeout"
        ),
        pytest.param(
            "health_status",
            ("200-299", "207"),
            "check.status",
            ((200, 299), (207, 207)),
            id="health-status",
        ),
        pytest.param("health_rise", ("3", "7"), "check.rise", (3, 7), id="health-rise"),
        pytest.param("health_fall", ("3", "7"), "check.fall", (3, 7), id="health-fall"),
    ],
)
def test_each_override_wins_over_global(
    option: str, raws: tuple[str, str], field: str, values: tuple[object, object]
) -> None:
    """For every overridable setting, a backend's own value beats the global one, for it alone."""
    global_raw, own_raw = raws
    global_value, own_value = values
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": f"http://a:1 {option}={own_raw}, http://b:2",
            f"PREFORK_LB_{option.upper()}": global_raw,
        }
    )
    a, b = settings.backends

    def get(backend: Backend) -> object:
        value: object = backend
        for part in field.split("."):
            value = getattr(value, part)
        return value

    assert getattr(settings, option) == global_value
    assert get(a) == own_value
    assert get(b) == global_value


def test_inherit_settings_for_later_backends() -> None:
    """A backend made after loading (a demo one) takes the global failure and check settings."""
    settings = load_config(
        {"PREFORK_LB_DEMO": "1", "PREFORK_LB_MAX_FAILS": "0", "PREFORK_LB_HEALTH_CHECK": "1"}
    )
    backend = inherit_settings(parse_backend_url("demo", "http://127.0.0.1:9001"), settings)
    assert (backend.weight, backend.backup, backend.max_fails) == (1, False, 0)
    assert backend.check == HealthCheck(enabled=True)


def test_per_backend_settings_are_documented() -> None:
    """Exactly the settings a backend can override say "(per backend too)" in their docs."""
    documented = {s.name for s in SETTINGS if s.doc.endswith("(per backend too).")}
    assert documented == {
        "max_fails",
        "fail_timeout",
        "health_check",
        "health_path",
        "health_interval",
        "health_timeout",
        "health_status",
        "health_rise",
        "health_fall",
    }


@pytest.mark.parametrize(
    ("value", "where", "expected"),
    [
        pytest.param(
            "http://a:1, http://b:2, http://c:3 weight=0",
            "PREFORK_LB_BACKENDS[2]: weight: ",
            "got '0'",
            id="weight-zero",
        ),
        pytest.param(
            "http://a:1 weight=1001",
            "PREFORK_LB_BACKENDS[0]: weight: ",
            "got '1001'",
            id="weight-big",
        ),
        pytest.param(
            "http://a:1 weight=x", "PREFORK_LB_BACKENDS[0]: weight: ", "got 'x'", id="weight-word"
        ),
        pytest.param(
            "http://a:1 weight=", "PREFORK_LB_BACKENDS[0]: weight: ", "got ''", id="weight-empty"
        ),
        pytest.param(
            "http://a:1 backup=maybe",
            "PREFORK_LB_BACKENDS[0]: backup: ",
            "got 'maybe'",
            id="backup-word",
        ),
        pytest.param(
            "http://a:1 max_fails=-1",
            "PREFORK_LB_BACKENDS[0]: max_fails: ",
            "got '-1'",
            id="max-fails-negative",
        ),
        pytest.param(
            "http://a:1 health_path=up",
            "PREFORK_LB_BACKENDS[0]: health_path: ",
            "got 'up'",
            id="health-path-no-slash",
        ),
        pytest.param(
            "http://a:1 health_status=200-700",
            "PREFORK_LB_BACKENDS[0]: health_status: ",
            "got '200-700'",
            id="health-status-range",
        ),
        pytest.param(
            "http://a:1 health_rise=0",
            "PREFORK_LB_BACKENDS[0]: health_rise: ",
            "got '0'",
            id="health-rise-zero",
        ),
        pytest.param(
            "http://a:1, http://b:2 wieght=2",
            "PREFORK_LB_BACKENDS[1]: ",
            "unknown option 'wieght' (known: backup, fail_timeout,",
            id="unknown-option",
        ),
        pytest.param(
            "http://a:1 policy=least_conn",
            "PREFORK_LB_BACKENDS[0]: ",
            "unknown option 'policy'",
            id="global-only-setting",
        ),
        pytest.param(
            "http://a:1 weight",
            "PREFORK_LB_BACKENDS[0]: ",
            "option 'weight' must be key=value or backup, got 'http://a:1 weight'",
            id="bare-word",
        ),
        pytest.param(
            "http://a:1 weight=2 weight=3",
            "PREFORK_LB_BACKENDS[0]: ",
            "option 'weight' is given twice, got 'http://a:1 weight=2 weight=3'",
            id="option-twice",
        ),
        pytest.param(
            "weight=2 http://a:1",
            "PREFORK_LB_BACKENDS[0]: ",
            "got 'weight=2'",
            id="option-before-url",
        ),
    ],
)
def test_backend_option_errors(value: str, where: str, expected: str) -> None:
    """A bad per-backend option is named with the item's index, the option and the value."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_BACKENDS": value})
    message = str(caught.value)
    assert message.startswith(where)
    assert expected in message


def test_backend_option_error_is_exact() -> None:
    """The message for a bad option has the shape 'SETTING[i]: option: expected, got VALUE'."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_BACKENDS": "http://a:1, http://b:2, http://c:3 weight=0"})
    assert str(caught.value) == (
        "PREFORK_LB_BACKENDS[2]: weight: must be a whole number from 1 to 1000, got '0'"
    )


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"PREFORK_LB_BACKENDS": "http://a:1 backup"}, id="env-one"),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://a:1 backup, http://b:2 backup=yes"}, id="env-two"
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://a:1 backup", "PREFORK_LB_DEMO": "1"}, id="even-in-demo"
        ),
    ],
)
def test_every_backend_a_backup(environ: dict[str, str]) -> None:
    """Backends that are all backups are refused: nothing would take traffic normally."""
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert str(caught.value).startswith("PREFORK_LB_BACKENDS: every backend is a backup")


def test_every_backend_a_backup_in_file(tmp_path: Path) -> None:
    """Backup-only [[backends]] tables are refused, naming the file."""
    environ = _with_file(tmp_path, '[[backends]]\nurl = "http://a:1"\nbackup = true\n')
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert str(caught.value).startswith(
        f"{environ['PREFORK_LB_CONFIG']}: backends: every backend is a backup"
    )


def test_backup_false_is_a_primary() -> None:
    """backup=false makes a backend a primary, so a backup beside it is accepted."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://a:1 backup=false, http://b:2 backup"})
    assert [backend.backup for backend in settings.backends] == [False, True]


@pytest.mark.parametrize(
    ("value", "where", "url"),
    [
        pytest.param("http://a:1, http://a:1", "PREFORK_LB_BACKENDS[1]", "http://a:1", id="same"),
        pytest.param(
            "http://a, http://b:2, HTTP://A:80/ weight=3",
            "PREFORK_LB_BACKENDS[2]",
            "http://a:80",
            id="same-after-normalising",
        ),
    ],
)
def test_duplicate_backend(value: str, where: str, url: str) -> None:
    """A backend URL listed twice is refused, naming the repeat and where it was first listed."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_BACKENDS": value})
    message = str(caught.value)
    assert message.startswith(f"{where}: backend already listed at [0]")
    assert message.endswith(f"got {url!r}")


def test_duplicate_backend_in_file(tmp_path: Path) -> None:
    """A URL repeated across [[backends]] tables and strings in the file is refused."""
    environ = _with_file(
        tmp_path, 'backends = ["http://b:2", { url = "http://a:1" }, "http://a:1/"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert str(caught.value) == (
        f"{environ['PREFORK_LB_CONFIG']}: backends[2]: backend already listed at [1], "
        "got 'http://a:1'"
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param(
            {"PREFORK_LB_RETRY_TIMEOUT": "10"},
            ["retry_timeout (10 s) is not above connect_timeout + read_timeout (65 s)"],
            id="budget-below-one-try",
        ),
        pytest.param({"PREFORK_LB_RETRY_TIMEOUT": "10", "PREFORK_LB_RETRIES": "0"}, [], id="off"),
    ],
)
def test_doubtful_settings(environ: dict[str, str], expected: list[str]) -> None:
    """A retry budget shorter than one try is allowed but warned about."""
    found = doubtful_settings(load_config({"PREFORK_LB_BACKENDS": "http://a:1", **environ}))
    assert [w.split(":")[0] for w in found] == expected


def _ca_bundle(path: Path) -> Path:
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_backend_tls_settings_from_environment(tmp_path: Path) -> None:
    """Certificate checks and the CA bundle are read from their PREFORK_LB_* variables."""
    bundle = _ca_bundle(tmp_path / "ca.pem")
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": "https://a:1",
            "PREFORK_LB_BACKEND_TLS_VERIFY": "off",
            "PREFORK_LB_BACKEND_CA_BUNDLE": f" {bundle} ",
        }
    )
    assert settings.backend_tls_verify is False
    assert settings.backend_ca_bundle == str(bundle)


def test_backend_ca_bundle_from_file_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative CA bundle path is resolved once, against the directory the master starts in."""
    _ca_bundle(tmp_path / "ca.pem")
    monkeypatch.chdir(tmp_path)
    environ = _with_file(tmp_path, 'backend_ca_bundle = "ca.pem"\nbackends = ["https://a:1"]\n')
    settings = load_config(environ)
    assert settings.backend_ca_bundle == str(tmp_path / "ca.pem")
    assert settings.backend_tls_verify is True


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param("missing.pem", None, "no such file or directory", id="missing"),
        pytest.param("dir", "directory", "is a directory", id="directory"),
        pytest.param("empty.pem", "", "not a PEM file of CA certificates (", id="no-certificates"),
        pytest.param("junk.pem", "hello\n", "not a PEM file of CA certificates (", id="not-pem"),
    ],
)
def test_bad_ca_bundle_is_named(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    """A CA bundle that cannot be loaded stops the load, naming the setting and the path."""
    path = tmp_path / name
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(
            {"PREFORK_LB_BACKENDS": "https://a:1", "PREFORK_LB_BACKEND_CA_BUNDLE": str(path)}
        )
    message = str(caught.value)
    assert message.startswith(f"PREFORK_LB_BACKEND_CA_BUNDLE: cannot load the CA bundle '{path}': ")
    assert expected in message


def test_bad_tls_verify_is_named() -> None:
    """PREFORK_LB_BACKEND_TLS_VERIFY takes the usual boolean spellings only."""
    with pytest.raises(ConfigError, match="PREFORK_LB_BACKEND_TLS_VERIFY: must be true or false"):
        load_config(
            {"PREFORK_LB_BACKENDS": "https://a:1", "PREFORK_LB_BACKEND_TLS_VERIFY": "maybe"}
        )


def test_tls_verify_off_is_warned_about(tmp_path: Path) -> None:
    """Turning certificate checks off is allowed but warned about, and so is an unused bundle."""
    environ = {"PREFORK_LB_BACKENDS": "https://a:1", "PREFORK_LB_BACKEND_TLS_VERIFY": "0"}
    assert [w.split(":")[0] for w in doubtful_settings(load_config(environ))] == [
        "backend_tls_verify is off"
    ]
    bundle = str(_ca_bundle(tmp_path / "ca.pem"))
    found = doubtful_settings(load_config({**environ, "PREFORK_LB_BACKEND_CA_BUNDLE": bundle}))
    assert found[1] == "backend_ca_bundle is not used while backend_tls_verify is off"


# --- client limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param("CLIENT_MIN_RATE", "0", "client_min_rate", 0, id="rate-off"),
        pytest.param("CLIENT_MIN_RATE", "2048", "client_min_rate", 2048, id="rate"),
        pytest.param("MAX_BODY_SIZE", "0", "max_body_size", 0, id="size-unlimited"),
        pytest.param("MAX_BODY_SIZE", "512", "max_body_size", 512, id="size-bytes"),
        pytest.param("MAX_BODY_SIZE", "64k", "max_body_size", 64 * 1024, id="size-k"),
        pytest.param("MAX_BODY_SIZE", "10M", "max_body_size", 10 * 1024**2, id="size-m-upper"),
        pytest.param("MAX_BODY_SIZE", " 2 g ", "max_body_size", 2 * 1024**3, id="size-g-spaced"),
        pytest.param("MAX_BODY_SIZE", "1GiB", "max_body_size", 1024**3, id="size-gib"),
        pytest.param("MAX_BODY_SIZE", "3kb", "max_body_size", 3 * 1024, id="size-kb"),
    ],
)
def test_client_limits_from_environment(
    variable: str, value: str, attribute: str, expected: object
) -> None:
    """client_min_rate is bytes per second; max_body_size takes binary k/m/g units."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1", f"PREFORK_LB_{variable}": value})
    assert getattr(settings, attribute) == expected


def test_client_limits_default_and_from_file(tmp_path: Path) -> None:
    """Defaults: 500 B/s and 1 GiB; a TOML file may give the size as a number or a string."""
    defaults = load_config({"PREFORK_LB_BACKENDS": "http://h:1"})
    assert (defaults.client_min_rate, defaults.max_body_size) == (500, 1024**3)
    text = 'backends = ["http://h:1"]\nmax_body_size = "5m"\nclient_min_rate = 10\n'
    settings = load_config(_with_file(tmp_path, text))
    assert (settings.client_min_rate, settings.max_body_size) == (10, 5 * 1024**2)
    settings = load_config(_with_file(tmp_path, 'backends = ["http://h:1"]\nmax_body_size = 99\n'))
    assert settings.max_body_size == 99


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("MAX_BODY_SIZE", "-1", id="size-negative"),
        pytest.param("MAX_BODY_SIZE", "1.5m", id="size-fraction"),
        pytest.param("MAX_BODY_SIZE", "10t", id="size-unknown-unit"),
        pytest.param("MAX_BODY_SIZE", "k", id="size-unit-only"),
        pytest.param("MAX_BODY_SIZE", "\u0661\u0660k", id="size-arabic-digits"),
        pytest.param("CLIENT_MIN_RATE", "fast", id="rate-word"),
        pytest.param("CLIENT_MIN_RATE", "-5", id="rate-negative"),
    ],
)
def test_client_limit_errors(variable: str, value: str) -> None:
    """A bad size or rate is named with its setting and value."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_DEMO": "1", f"PREFORK_LB_{variable}": value})
    assert str(caught.value).startswith(f"PREFORK_LB_{variable}: ")
    assert repr(value) in str(caught.value)


# --- tunnels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param("UPGRADE_PROTOCOLS", "", "upgrade_protocols", (), id="protocols-off"),
        pytest.param(
            "UPGRADE_PROTOCOLS", "WebSocket", "upgrade_protocols", ("websocket",), id="lowered"
        ),
        pytest.param(
            "UPGRADE_PROTOCOLS",
            " websocket, x-chat ,WEBSOCKET",
            "upgrade_protocols",
            ("websocket", "x-chat"),
            id="list-once-each",
        ),
        pytest.param("TUNNEL_TIMEOUT", "30", "tunnel_timeout", 30.0, id="timeout"),
        pytest.param("TUNNEL_TIMEOUT", "0.5", "tunnel_timeout", 0.5, id="timeout-fraction"),
    ],
)
def test_tunnel_settings_from_environment(
    variable: str, value: str, attribute: str, expected: object
) -> None:
    """upgrade_protocols is a comma-separated list of lower-cased tokens; tunnel_timeout seconds."""
    settings = load_config({"PREFORK_LB_BACKENDS": "http://h:1", f"PREFORK_LB_{variable}": value})
    assert getattr(settings, attribute) == expected


def test_tunnel_settings_default_and_from_file(tmp_path: Path) -> None:
    """Defaults: WebSocket tunnels idle for at most an hour; the file takes a list, [] for none."""
    defaults = load_config({"PREFORK_LB_BACKENDS": "http://h:1"})
    assert (defaults.upgrade_protocols, defaults.tunnel_timeout) == (("websocket",), 3600.0)
    text = 'backends = ["http://h:1"]\nupgrade_protocols = []\ntunnel_timeout = 120\n'
    settings = load_config(_with_file(tmp_path, text))
    assert (settings.upgrade_protocols, settings.tunnel_timeout) == ((), 120.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("UPGRADE_PROTOCOLS", "websocket/13", id="protocol-with-version"),
        pytest.param("UPGRADE_PROTOCOLS", "web socket", id="protocol-with-space"),
        pytest.param("TUNNEL_TIMEOUT", "0", id="timeout-zero"),
        pytest.param("TUNNEL_TIMEOUT", "forever", id="timeout-word"),
    ],
)
def test_tunnel_setting_errors(variable: str, value: str) -> None:
    """A bad protocol name or tunnel timeout is named with its setting and value."""
    with pytest.raises(ConfigError) as caught:
        load_config({"PREFORK_LB_DEMO": "1", f"PREFORK_LB_{variable}": value})
    assert str(caught.value).startswith(f"PREFORK_LB_{variable}: ")
    assert repr(value.strip()) in str(caught.value) or repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("READY_PATH", "ready", "PREFORK_LB_READY_PATH: must be a path", id="relative"),
        pytest.param("READY_PATH", "/r?x=1", "got '/r?x=1'", id="query"),
        pytest.param("LIVE_PATH", "/a b", "PREFORK_LB_LIVE_PATH: must be a path", id="space"),
        pytest.param("LIVE_PATH", "/_prefork_lb/ready", "must differ from ready_path", id="same"),
    ],
)
def test_bad_probe_paths_are_named(variable: str, value: str, message: str) -> None:
    """A probe path that is not a plain path, or both probes on one path, stops the start."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"PREFORK_LB_BACKENDS": "http://h:1", f"PREFORK_LB_{variable}": value})
