"""DNS sources in the settings: slots in the backend list, per pool, errors named."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork_lb.config import ConfigError, DnsGroup, Settings, effective_pools, load_config
from prefork_lb.dns import DnsSource


def from_file(tmp_path: Path, text: str, **env: str) -> Settings:
    """The settings of this TOML text (and these variables)."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config({"PREFORK_LB_CONFIG": str(path), **env})


def test_a_top_level_dns_source_is_the_default_pools_slots(tmp_path: Path) -> None:
    """``dns`` at the top level gives the default pool dns_slots slots after its listed backends."""
    settings = load_config(
        {
            "PREFORK_LB_BACKENDS": "http://10.0.0.1:80",
            "PREFORK_LB_DNS": "api.internal:8080",
            "PREFORK_LB_DNS_SLOTS": "3",
            "PREFORK_LB_MAX_FAILS": "4",
        }
    )
    listed, *slots = settings.backends
    assert listed.url == "http://10.0.0.1:80"
    assert [b.dns for b in slots] == ["api.internal:8080"] * 3
    assert [b.port for b in slots] == [8080] * 3
    assert all(b.max_fails == 4 for b in slots)  # the per-backend settings hold for each
    assert len({b.url for b in settings.backends}) == 4  # placeholders, each its own
    assert settings.dns_groups == (DnsGroup("default", DnsSource("a", "api.internal", 8080), 1, 3),)
    (pool,) = effective_pools(settings)
    assert [m.index for m in pool.members] == [0, 1, 2, 3]


def test_a_pool_may_have_only_an_srv_source(tmp_path: Path) -> None:
    """A [pools.NAME] with dns_srv and no backends is a pool of slots with its own options."""
    settings = from_file(
        tmp_path,
        'dns = "a.internal:80"\n[pools.api]\ndns_srv = "_http._tcp.api.internal"\n'
        'dns_slots = 2\ndns_scheme = "https"\nhealth_check = true\n',
    )
    default, api = settings.dns_groups
    assert (default.pool, default.count) == ("default", 32)
    assert (api.pool, api.source, api.count) == (
        "api",
        DnsSource("srv", "_http._tcp.api.internal", 0),
        2,
    )
    slots = settings.backends[api.first : api.first + 2]
    assert all(b.scheme == "https" and b.check.enabled for b in slots)


def test_a_named_pool_does_not_inherit_the_top_level_source(tmp_path: Path) -> None:
    """The top-level dns is the default pool's; another pool has only what it sets itself."""
    settings = from_file(
        tmp_path,
        'dns = "a.internal:80"\n[pools.api]\n[[pools.api.backends]]\nurl = "http://10.0.0.1:80"\n',
    )
    assert [g.pool for g in settings.dns_groups] == ["default"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[pools.api]\ndns = "a.internal:80"\ndns_srv = "_http._tcp.a.internal"\n',
            "pools.api.dns_srv: '_http._tcp.a.internal': a pool has dns or dns_srv, not both",
            id="both",
        ),
        pytest.param(
            "[pools.api]\npolicy = 'hash'\n",
            "pools.api: missing key 'backends' (at least one [[pools.api.backends]], or dns or "
            "dns_srv)",
            id="neither",
        ),
        pytest.param(
            'dns = "a.internal:80"\nsticky_cookie = "lb"\n',
            "sticky_cookie: 'lb': sticky cookies are not supported for a pool whose backends "
            'come from DNS (use policy = "hash")',
            id="sticky",
        ),
        pytest.param('dns = "a.internal"\n', "dns: must be name:port", id="no-port"),
        pytest.param('dns_srv = "api.internal"\n', "dns_srv: must be an SRV name", id="not-srv"),
        pytest.param(
            "dns_slots = 0\n", "dns_slots: must be a whole number from 1 to 1024", id="slots"
        ),
        pytest.param('dns_scheme = "ftp"\n', "dns_scheme: must be http or https", id="scheme"),
        pytest.param('dns_resolver = "dns.google"\n', "dns_resolver: must be an IP", id="resolver"),
        pytest.param(
            "dns_interval = 0\n", "dns_interval: must be a positive number", id="interval"
        ),
    ],
)
def test_bad_dns_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    """A bad DNS setting stops the start with a message naming the setting and the value."""
    with pytest.raises(ConfigError) as raised:
        from_file(tmp_path, 'backends = ["http://10.0.0.9:80"]\n' + text)
    assert message in str(raised.value)


def test_dns_settings_from_the_environment() -> None:
    """The global DNS settings have PREFORK_LB_* variables like every other setting."""
    settings = load_config(
        {
            "PREFORK_LB_DNS_SRV": "_http._tcp.api.internal",
            "PREFORK_LB_DNS_RESOLVER": "127.0.0.1:5353",
            "PREFORK_LB_DNS_INTERVAL": "30",
            "PREFORK_LB_DNS_TIMEOUT": "0.5",
            "PREFORK_LB_DNS_ALLOW_EMPTY_START": "yes",
        }
    )
    assert settings.dns_resolver == ("127.0.0.1", 5353)
    assert (settings.dns_interval, settings.dns_timeout) == (30.0, 0.5)
    assert settings.dns_allow_empty_start
    assert len(settings.backends) == 32
