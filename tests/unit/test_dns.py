"""Backends from DNS, the pure part: names as written, SRV mapping, delays, the last good set."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork_lb.dns import (
    REASONS,
    Address,
    DnsFailure,
    DnsSource,
    DnsState,
    Resolution,
    SrvRecord,
    follow,
    make_resolution,
    next_delay,
    parse_dns,
    parse_dns_srv,
    parse_resolver,
    retry_delay,
    srv_addresses,
)
from prefork_lb.values import ConfigError

# --- parse_dns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("web.test:8080", DnsSource("a", "web.test", 8080), id="name"),
        pytest.param("  web.test:80 ", DnsSource("a", "web.test", 80), id="spaces"),
        pytest.param("web.test.:80", DnsSource("a", "web.test.", 80), id="final-dot"),
        pytest.param("backends:1", DnsSource("a", "backends", 1), id="one-label"),
        pytest.param(
            "my_svc.ns.svc:65535", DnsSource("a", "my_svc.ns.svc", 65535), id="underscore"
        ),
        pytest.param("xn--bcher-kva.test:80", DnsSource("a", "xn--bcher-kva.test", 80), id="idna"),
        pytest.param("10.0.0.1:80", DnsSource("a", "10.0.0.1", 80), id="ipv4-literal"),
        pytest.param("[fd00::1]:80", DnsSource("a", "fd00::1", 80), id="ipv6-literal"),
        pytest.param("", None, id="empty-is-none"),
        pytest.param("   ", None, id="blank-is-none"),
    ],
)
def test_parse_dns_accepts(value: str, expected: DnsSource | None) -> None:
    """A hostname or IP literal with a port is a source of A/AAAA records; empty is none."""
    assert parse_dns("dns", value) == expected


_NAME_PORT = "must be name:port, such as backends.internal:8080 ([v6]:port for IPv6)"
_PORT_RANGE = "the port must be a whole number from 1 to 65535"
_NOT_HOST = (
    "is not a hostname or an IP address (a hostname is labels of letters, digits, '-' and '_' "
    "of up to 63 characters, a non-ASCII one in its xn-- form)"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("web.test", f"dns: {_NAME_PORT}, got 'web.test'", id="no-port"),
        pytest.param("::1:80", f"dns: {_NAME_PORT}, got '::1:80'", id="ipv6-unbracketed"),
        pytest.param("[::1]80", f"dns: {_NAME_PORT}, got '[::1]80'", id="ipv6-no-colon"),
        pytest.param(None, f"dns: {_NAME_PORT}, got None", id="not-text"),
        pytest.param(8080, f"dns: {_NAME_PORT}, got 8080", id="a-number"),
        pytest.param("web.test:0", f"dns: {_PORT_RANGE}, got 'web.test:0'", id="port-0"),
        pytest.param("web.test:65536", f"dns: {_PORT_RANGE}, got 'web.test:65536'", id="port-big"),
        pytest.param("web.test:8o", f"dns: {_PORT_RANGE}, got 'web.test:8o'", id="port-letter"),
        pytest.param("web.test:", f"dns: {_PORT_RANGE}, got 'web.test:'", id="port-empty"),
        pytest.param("web.test:٨٠", f"dns: {_PORT_RANGE}, got 'web.test:٨٠'", id="port-arabic"),
        pytest.param(
            "-web.test:80", f"dns: '-web.test' {_NOT_HOST}, got '-web.test:80'", id="dash"
        ),
        pytest.param("a..b:80", f"dns: 'a..b' {_NOT_HOST}, got 'a..b:80'", id="empty-label"),
        pytest.param("a b:80", f"dns: 'a b' {_NOT_HOST}, got 'a b:80'", id="space"),
        pytest.param(
            "bücher.test:80", f"dns: 'bücher.test' {_NOT_HOST}, got 'bücher.test:80'", id="unicode"
        ),
        pytest.param(
            "10.0.0.300:80", f"dns: '10.0.0.300' {_NOT_HOST}, got '10.0.0.300:80'", id="bad-ipv4"
        ),
        pytest.param(
            "[web.test]:80", f"dns: 'web.test' {_NOT_HOST}, got '[web.test]:80'", id="brackets"
        ),
        pytest.param(
            "x" * 64 + ".test:80",
            f"dns: '{'x' * 64}.test' {_NOT_HOST}, got '{'x' * 64}.test:80'",
            id="label-too-long",
        ),
    ],
)
def test_parse_dns_rejects(value: object, message: str) -> None:
    """A bad dns value is refused with a message naming the setting and the value."""
    with pytest.raises(ConfigError) as raised:
        parse_dns("dns", value)
    assert str(raised.value) == message


def test_dns_source_label_is_what_the_user_wrote() -> None:
    """The label of a source is name:port ([v6]:port), or the SRV name."""
    assert DnsSource("a", "web.test", 80).label == "web.test:80"
    assert DnsSource("a", "fd00::1", 80).label == "[fd00::1]:80"
    assert DnsSource("srv", "_http._tcp.web.test", 0).label == "_http._tcp.web.test"


# --- parse_dns_srv ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("_http._tcp.web.test", "_http._tcp.web.test", id="name"),
        pytest.param("_http._tcp.web.test.", "_http._tcp.web.test.", id="final-dot"),
        pytest.param(" _grpc-web._tcp.api ", "_grpc-web._tcp.api", id="dash-spaces"),
        pytest.param("", None, id="empty-is-none"),
    ],
)
def test_parse_dns_srv_accepts(value: str, expected: str | None) -> None:
    """An SRV name _service._proto.name is a source of SRV records; empty is none."""
    source = parse_dns_srv("dns_srv", value)
    assert source == (DnsSource("srv", expected, 0) if expected else None)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("web.test", id="plain-name"),
        pytest.param("http._tcp.web.test", id="service-without-underscore"),
        pytest.param("_http.web.test", id="no-proto"),
        pytest.param("_http._tcp", id="no-name"),
        pytest.param("_http._tcp.", id="empty-name"),
        pytest.param("_http._tcp.-web", id="bad-name"),
        pytest.param("_http._tcp.web.test:80", id="with-port"),
        pytest.param("_._tcp.web.test", id="empty-service"),
        pytest.param(["_http._tcp.web"], id="a-list"),
    ],
)
def test_parse_dns_srv_rejects(value: object) -> None:
    """A bad dns_srv value is refused with a message naming the setting and the value."""
    with pytest.raises(ConfigError) as raised:
        parse_dns_srv("pools.api.dns_srv", value)
    assert str(raised.value) == (
        "pools.api.dns_srv: must be an SRV name _service._proto.name, such as _http._tcp.api, "
        f"got {value!r}"
    )


# --- parse_resolver -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("10.0.0.2", ("10.0.0.2", 53), id="ipv4-default-port"),
        pytest.param("10.0.0.2:5353", ("10.0.0.2", 5353), id="ipv4-port"),
        pytest.param("[fd00::2]:5353", ("fd00::2", 5353), id="ipv6-port"),
        pytest.param("[fd00::2]", ("fd00::2", 53), id="ipv6-brackets"),
        pytest.param("FD00:0::2", ("fd00::2", 53), id="ipv6-normalised"),
        pytest.param("", None, id="empty-is-the-systems"),
    ],
)
def test_parse_resolver_accepts(value: str, expected: tuple[str, int] | None) -> None:
    """A DNS server is an IP literal with an optional port (53); empty is the system's."""
    assert parse_resolver("dns_resolver", value) == expected


_SERVER = "must be an IP address with an optional port, such as 10.0.0.2:53 or [fd00::2]:53"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "dns.test:53",
            f"{_SERVER} (not a hostname: that would need DNS itself), got 'dns.test:53'",
            id="hostname",
        ),
        pytest.param("10.0.0.2:0", f"{_PORT_RANGE}, got '10.0.0.2:0'", id="port-0"),
        pytest.param("10.0.0.2:", f"{_PORT_RANGE}, got '10.0.0.2:'", id="port-empty"),
        pytest.param("[fd00::2]x", f"{_SERVER}, got '[fd00::2]x'", id="after-bracket"),
        pytest.param("10.0.0.2:53:53", f"{_SERVER}, got '10.0.0.2:53:53'", id="two-ports"),
        pytest.param(53, f"{_SERVER}, got 53", id="a-number"),
    ],
)
def test_parse_resolver_rejects(value: object, message: str) -> None:
    """A bad dns_resolver value is refused with a message naming the setting and the value."""
    with pytest.raises(ConfigError) as raised:
        parse_resolver("dns_resolver", value)
    assert str(raised.value) == f"dns_resolver: {message}"


# --- answers -----------------------------------------------------------------------------------


def test_address_key_brackets_ipv6() -> None:
    """An address's key is ip:port, with brackets around an IPv6 address."""
    assert Address("10.0.0.1", 80).key == "10.0.0.1:80"
    assert Address("fd00::1", 80).key == "[fd00::1]:80"


def test_make_resolution_normalises_sorts_and_keeps_each_key_once() -> None:
    """Addresses are normalised, numerically sorted (IPv4 first), and each ip:port kept once."""
    resolution = make_resolution(
        [
            Address("fd00:0:0::1", 80),
            Address("10.0.0.10", 80),
            Address("10.0.0.9", 80),
            Address("10.0.0.9", 80, weight=3),
            Address("10.0.0.9", 81),
        ],
        30,
    )
    assert resolution == Resolution(
        (
            Address("10.0.0.9", 80, weight=3),
            Address("10.0.0.9", 81),
            Address("10.0.0.10", 80),
            Address("fd00::1", 80),
        ),
        30,
    )


@pytest.mark.parametrize(
    ("records", "targets", "expected"),
    [
        pytest.param(
            [SrvRecord(10, 5, 8080, "a.test"), SrvRecord(10, 1, 8081, "b.test")],
            {"a.test": ["10.0.0.1"], "b.test": ["10.0.0.2", "fd00::2"]},
            [
                Address("10.0.0.1", 8080, 5),
                Address("10.0.0.2", 8081, 1),
                Address("fd00::2", 8081, 1),
            ],
            id="one-priority-weights-ports",
        ),
        pytest.param(
            [
                SrvRecord(20, 1, 80, "b.test"),
                SrvRecord(10, 1, 80, "a.test"),
                SrvRecord(30, 1, 80, "c.test"),
            ],
            {"a.test": ["10.0.0.1"], "b.test": ["10.0.0.2"], "c.test": ["10.0.0.3"]},
            [
                Address("10.0.0.1", 80),
                Address("10.0.0.2", 80, backup=True),
                Address("10.0.0.3", 80, backup=True),
            ],
            id="lowest-priority-primary-others-backup",
        ),
        pytest.param(
            [SrvRecord(0, 0, 80, "a.test"), SrvRecord(0, 65535, 81, "a.test")],
            {"a.test": ["10.0.0.1"]},
            [Address("10.0.0.1", 80, 1), Address("10.0.0.1", 81, 1000)],
            id="weight-0-is-1-and-big-is-1000",
        ),
        pytest.param(
            [
                SrvRecord(20, 50, 80, "b.test"),
                SrvRecord(10, 2, 80, "a.test"),
                SrvRecord(10, 7, 80, "c.test"),
            ],
            {"a.test": ["10.0.0.1"], "b.test": ["10.0.0.1"], "c.test": ["10.0.0.1"]},
            [Address("10.0.0.1", 80, 7)],
            id="duplicate-keeps-primary-then-heaviest",
        ),
        pytest.param(
            [SrvRecord(10, 1, 80, "A.Test."), SrvRecord(5, 1, 80, "gone.test")],
            {"a.test": ["10.0.0.1"]},
            [Address("10.0.0.1", 80, backup=True)],
            id="target-case-dot-and-a-target-without-addresses",
        ),
        pytest.param([SrvRecord(0, 0, 0, ".")], {}, [], id="no-service"),
        pytest.param([], {}, [], id="none"),
    ],
)
def test_srv_addresses(
    records: list[SrvRecord], targets: dict[str, list[str]], expected: list[Address]
) -> None:
    """SRV records give addresses: port from the record, weight clamped, higher priority backup."""
    assert srv_addresses(records, targets) == tuple(expected)


@pytest.mark.parametrize(
    ("ttl", "interval", "delay"),
    [
        pytest.param(30, 10, 10, id="ceiling-interval"),
        pytest.param(5, 10, 5, id="ttl"),
        pytest.param(0, 10, 1, id="floor-1s"),
        pytest.param(0.2, 10, 1, id="floor-fraction"),
        pytest.param(math.inf, 10, 10, id="never-expires"),
        pytest.param(30, 0.5, 0.5, id="interval-below-floor-wins"),
    ],
)
def test_next_delay(ttl: float, interval: float, delay: float) -> None:
    """The next resolve comes after the TTL, at least 1 s, at most dns_interval."""
    assert next_delay(ttl, interval) == delay


# --- the last good set --------------------------------------------------------------------------

A = Address("10.0.0.1", 80)
B = Address("10.0.0.2", 80)
C = Address("10.0.0.3", 80)


def _steps(
    results: list[Resolution | DnsFailure], state: DnsState | None = None
) -> tuple[DnsState, list[str | None]]:
    state = state or DnsState("web.test:80")
    lines = []
    for result in results:
        state, line = follow(state, result)
        lines.append(line)
    return state, lines


def test_first_answer_logs_every_address() -> None:
    """The first answer becomes the set and is logged with each address it adds."""
    state, lines = _steps([Resolution((A, B), 30)])
    assert state.addresses == (A, B)
    assert lines == ["dns web.test:80: 2 addresses (+10.0.0.1:80, +10.0.0.2:80)"]


def test_changed_answer_logs_added_removed_and_changed() -> None:
    """A changed set is logged once with what came, went and changed weight; the same set is not."""
    heavier = Address("10.0.0.2", 80, weight=4)
    state, lines = _steps(
        [
            Resolution((A, B), 30),
            Resolution((B, C), 30),
            Resolution((heavier, C), 30),
            Resolution((heavier, C), 30),
        ]
    )
    assert state.addresses == (heavier, C)
    assert lines[1:] == [
        "dns web.test:80: 2 addresses (+10.0.0.3:80, -10.0.0.1:80)",
        "dns web.test:80: 2 addresses (~10.0.0.2:80)",
        None,
    ]


@pytest.mark.parametrize("reason", REASONS)
def test_failure_keeps_the_last_good_set_and_logs_once(reason: str) -> None:
    """Any failure keeps the last good set; a run of the same failure is logged once."""
    failure = DnsFailure(reason, "detail")  # type: ignore[arg-type]
    state, lines = _steps([Resolution((A, B), 30), failure, failure, failure])
    assert state.addresses == (A, B)
    assert lines[1:] == [
        f"dns web.test:80: {reason} (detail); keeping the last 2 addresses",
        None,
        None,
    ]


def test_empty_answer_keeps_the_last_good_set() -> None:
    """An answer without addresses is the failure "empty": the set stays."""
    state, lines = _steps([Resolution((A,), 30), Resolution((), 30), Resolution((), 5)])
    assert state.addresses == (A,)
    assert lines[1:] == [
        "dns web.test:80: empty (no addresses in the answer); keeping the last 1 address",
        None,
    ]


def test_failure_before_any_answer_says_so() -> None:
    """A failure before any good answer says there are no addresses yet."""
    state, lines = _steps([DnsFailure("nxdomain", "")])
    assert state.addresses == ()
    assert lines == ["dns web.test:80: nxdomain; no addresses yet"]


def test_another_failure_and_recovery_are_logged() -> None:
    """A different failure is logged, and so is the recovery, even with the same set."""
    state, lines = _steps(
        [
            Resolution((A,), 30),
            DnsFailure("timeout", "no answer in time"),
            DnsFailure("servfail", "SERVFAIL"),
            Resolution((A,), 30),
            DnsFailure("servfail", "SERVFAIL"),
            Resolution((A, B), 30),
        ]
    )
    assert state == DnsState("web.test:80", (A, B), None)
    assert lines[1:] == [
        "dns web.test:80: timeout (no answer in time); keeping the last 1 address",
        "dns web.test:80: servfail (SERVFAIL); keeping the last 1 address",
        "dns web.test:80: resolves again, 1 address (unchanged)",
        "dns web.test:80: servfail (SERVFAIL); keeping the last 1 address",
        "dns web.test:80: resolves again, 2 addresses (+10.0.0.2:80)",
    ]


_addresses = st.lists(
    st.builds(Address, st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1"]), st.integers(1, 3)),
    max_size=4,
).map(lambda found: make_resolution(found, 30).addresses)
_results = st.one_of(
    _addresses.map(lambda found: Resolution(found, 30)),
    st.builds(DnsFailure, st.sampled_from(REASONS), st.sampled_from(["", "x"])),
)


@given(st.lists(_results, max_size=30))
def test_a_failure_never_empties_a_set(results: list[Resolution | DnsFailure]) -> None:
    """Whatever comes, the set is the last answer that had addresses, never emptied by a failure."""
    state = DnsState("web.test:80")
    last_good: tuple[Address, ...] = ()
    for result in results:
        before = state
        state, line = follow(state, result)
        if isinstance(result, Resolution) and result.addresses:
            last_good = result.addresses
        assert state.addresses == last_good
        if before.addresses:
            assert state.addresses
        # A line only when something changed: the set, or the failure it is in.
        changed = (state.addresses, state.failing) != (before.addresses, before.failing)
        assert (line is not None) == changed


@pytest.mark.parametrize(
    ("failures", "interval", "delay"),
    [
        pytest.param(1, 30.0, 1.0, id="first-failure-1s"),
        pytest.param(2, 30.0, 2.0, id="doubles"),
        pytest.param(5, 30.0, 16.0, id="fifth"),
        pytest.param(6, 30.0, 30.0, id="capped-at-interval"),
        pytest.param(10_000, 30.0, 30.0, id="a-long-outage-stays-capped"),
        pytest.param(1, 0.5, 0.5, id="interval-below-1s-wins"),
        pytest.param(0, 30.0, 1.0, id="no-failure-reads-as-the-first"),
    ],
)
def test_retry_delay(failures: int, interval: float, delay: float) -> None:
    """After failures the next try comes in 1 s, doubling with each failure, at most interval."""
    assert retry_delay(failures, interval) == delay
