"""The resolver against real DNS servers on the loopback: our dnspython test server and dnsmasq.

Each server is shared by the module's tests (names differ between tests);
the tests that take a server down start their own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from prefork_lb.dns import Address, DnsFailure, DnsSource, Resolution
from prefork_lb.resolver import Resolver
from tests.support.dns_server import DnsServer, dns_server
from tests.support.dnsmasq import Dnsmasq, dnsmasq
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 2.0
# A resolve that gets no answer ends within its timeout, plus dnspython's last retry's share.
SHORT_TIMEOUT = 0.5
SLACK = 0.5


def _a(name: str, port: int = 80) -> DnsSource:
    return DnsSource("a", name, port)


def _srv(name: str) -> DnsSource:
    return DnsSource("srv", name, 0)


def _failure(resolver: Resolver, source: DnsSource) -> DnsFailure:
    with pytest.raises(DnsFailure) as raised:
        resolver.resolve(source)
    return raised.value


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    """One programmable DNS server for the module's tests."""
    with dns_server() as started:
        yield started


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    """A resolver that asks the module's server."""
    return Resolver(server.address, TIMEOUT)


# --- the programmable server -------------------------------------------------------------------


def test_server_answers_authoritatively(server: DnsServer) -> None:
    """The test server sets AA, answers NOERROR with no record for a type a name lacks, and
    NXDOMAIN for a name it does not know."""
    server.set_a("aa.test", ["10.0.0.1"], ttl=9)
    answers = {
        (name, rdtype): dns.query.udp(
            dns.message.make_query(name, rdtype), "127.0.0.1", timeout=TIMEOUT, port=server.port
        )
        for name, rdtype in [("aa.test", "A"), ("aa.test", "AAAA"), ("unknown-aa.test", "A")]
    }
    assert all(response.flags & dns.flags.AA for response in answers.values())
    found = answers["aa.test", "A"]
    assert (found.rcode(), [rrset.to_text() for rrset in found.answer]) == (
        dns.rcode.NOERROR,
        ["aa.test. 9 IN A 10.0.0.1"],
    )
    assert (answers["aa.test", "AAAA"].rcode(), answers["aa.test", "AAAA"].answer) == (
        dns.rcode.NOERROR,
        [],
    )
    assert answers["unknown-aa.test", "A"].rcode() == dns.rcode.NXDOMAIN


def test_a_records_with_their_ttl(server: DnsServer, resolver: Resolver) -> None:
    """A records become addresses on the source's port, sorted, with the records' TTL."""
    server.set_a("web.a.test", ["10.0.0.2", "10.0.0.10", "10.0.0.1"], ttl=30)
    assert resolver.resolve(_a("web.a.test", 8080)) == Resolution(
        (Address("10.0.0.1", 8080), Address("10.0.0.2", 8080), Address("10.0.0.10", 8080)), 30
    )


def test_a_and_aaaa_records_together(server: DnsServer, resolver: Resolver) -> None:
    """A and AAAA records are both asked for; the TTL is the smaller of the two sets'."""
    server.set_a("both.test", ["::1", "10.0.0.1", "fd00:0::7"], ttl=20)
    server.set_a("v6.test", ["::1"], ttl=15)
    assert resolver.resolve(_a("both.test")) == Resolution(
        (Address("10.0.0.1", 80), Address("::1", 80), Address("fd00::7", 80)), 20
    )
    assert resolver.resolve(_a("v6.test")).addresses == (Address("::1", 80),)
    assert server.queries("v6.test", "A") == 1
    assert server.queries("v6.test", "AAAA") == 1


def test_name_without_address_records_is_empty(server: DnsServer, resolver: Resolver) -> None:
    """A name that exists but has no A or AAAA record is the failure "empty"."""
    server.set_srv("srv-only.test", [(1, 1, 80, "web.a.test")])
    assert _failure(resolver, _a("srv-only.test")).reason == "empty"


def test_unknown_name_is_nxdomain(server: DnsServer, resolver: Resolver) -> None:
    """A name the server does not know is the failure "nxdomain"."""
    server.set_nxdomain("gone.test")
    assert _failure(resolver, _a("gone.test")).reason == "nxdomain"
    assert _failure(resolver, _a("never-set.test")).reason == "nxdomain"
    assert _failure(resolver, _srv("_http._tcp.never-set.test")).reason == "nxdomain"


@pytest.mark.parametrize(("rcode", "reason"), [("SERVFAIL", "servfail"), ("REFUSED", "refused")])
def test_error_rcodes(server: DnsServer, resolver: Resolver, rcode: str, reason: str) -> None:
    """SERVFAIL and REFUSED answers are failures of their own kind, with the server named."""
    name = f"{reason}.test"
    server.fail(name, rcode)
    failure = _failure(resolver, _a(name))
    assert failure.reason == reason
    assert failure.detail == f"127.0.0.1@{server.port}: {rcode}"
    assert _failure(resolver, _srv(f"_http._tcp.{name}")).reason == "nxdomain"


def test_srv_with_additional_section(server: DnsServer, resolver: Resolver) -> None:
    """SRV records map to weighted, prioritised addresses; targets in the additional section are
    not asked for again."""
    server.set_a("t1.add.test", ["10.0.1.1"], ttl=40)
    server.set_a("t2.add.test", ["10.0.1.2", "::1"], ttl=30)
    server.set_srv(
        "_http._tcp.add.test",
        [(10, 5, 8080, "t1.add.test"), (10, 0, 8081, "t2.add.test"), (20, 9, 9000, "t1.add.test")],
        ttl=60,
    )
    assert resolver.resolve(_srv("_http._tcp.add.test")) == Resolution(
        (
            Address("10.0.1.1", 8080, 5),
            Address("10.0.1.1", 9000, 9, backup=True),
            Address("10.0.1.2", 8081, 1),
            Address("::1", 8081, 1),
        ),
        30,
    )
    assert server.queries("t1.add.test") == server.queries("t2.add.test") == 0


def test_srv_without_additional_section(server: DnsServer, resolver: Resolver) -> None:
    """Without an additional section the targets are asked for; one without addresses adds none."""
    server.set_a("t1.noadd.test", ["10.0.2.1"], ttl=50)
    server.set_srv(
        "_http._tcp.noadd.test",
        [(1, 3, 8080, "t1.noadd.test"), (1, 3, 8080, "missing.noadd.test")],
        ttl=45,
        additional=False,
    )
    assert resolver.resolve(_srv("_http._tcp.noadd.test")) == Resolution(
        (Address("10.0.2.1", 8080, 3),), 45
    )
    assert server.queries("t1.noadd.test", "A") == 1
    assert server.queries("missing.noadd.test", "A") == 1


def test_srv_whose_targets_have_no_addresses_is_empty(
    server: DnsServer, resolver: Resolver
) -> None:
    """SRV records whose targets resolve to nothing are the failure "empty"."""
    server.set_srv("_http._tcp.nowhere.test", [(1, 1, 80, "nobody.nowhere.test")])
    assert _failure(resolver, _srv("_http._tcp.nowhere.test")).reason == "empty"


def test_srv_target_failing_fails_the_resolve(server: DnsServer, resolver: Resolver) -> None:
    """A target that cannot be resolved (SERVFAIL) fails the whole resolve: no partial set."""
    server.set_a("ok.partial.test", ["10.0.3.1"])
    server.fail("bad.partial.test", "SERVFAIL")
    server.set_srv(
        "_http._tcp.partial.test",
        [(1, 1, 80, "ok.partial.test"), (1, 1, 80, "bad.partial.test")],
        additional=False,
    )
    assert _failure(resolver, _srv("_http._tcp.partial.test")).reason == "servfail"


def test_changed_records_are_seen_on_the_next_resolve(
    server: DnsServer, resolver: Resolver
) -> None:
    """Nothing is cached: a record changed between two resolves is seen by the second."""
    server.set_a("moving.test", ["10.0.4.1", "10.0.4.2"], ttl=300)
    assert len(resolver.resolve(_a("moving.test")).addresses) == 2
    server.set_a("moving.test", ["10.0.4.2", "10.0.4.3"], ttl=5)
    assert resolver.resolve(_a("moving.test")) == Resolution(
        (Address("10.0.4.2", 80), Address("10.0.4.3", 80)), 5
    )


def test_large_answer_comes_over_tcp(server: DnsServer, resolver: Resolver) -> None:
    """An answer too big for UDP is truncated, and the resolver asks again over TCP."""
    ips = [f"10.5.{i // 200}.{i % 200 + 1}" for i in range(300)]
    server.set_a("big.test", ips)
    assert len(resolver.resolve(_a("big.test")).addresses) == 300
    assert server.queries("big.test", "A") == 2  # UDP (truncated), then TCP


def test_ip_literal_is_not_asked_for(server: DnsServer, resolver: Resolver) -> None:
    """An IP literal resolves to itself without a query, and never expires."""
    assert resolver.resolve(_a("10.9.9.9", 81)) == Resolution(
        (Address("10.9.9.9", 81),), float("inf")
    )
    assert resolver.resolve(_a("fd00::0:9")).addresses == (Address("fd00::9", 80),)
    assert server.queries("10.9.9.9") == 0


def test_silent_server_is_a_timeout_within_the_timeout(server: DnsServer) -> None:
    """A server that does not answer is the failure "timeout", within the resolver's timeout."""
    server.drop("silent.test")
    started = time.monotonic()
    failure = _failure(Resolver(server.address, SHORT_TIMEOUT), _a("silent.test"))
    assert failure.reason == "timeout"
    assert time.monotonic() - started < SHORT_TIMEOUT + SLACK


def test_server_down_then_back() -> None:
    """A server that is down is a timeout within the timeout; back on its port, it answers again."""
    with dns_server() as server:
        server.set_a("web.down.test", ["10.0.6.1"])
        resolver = Resolver(server.address, SHORT_TIMEOUT)
        assert resolver.resolve(_a("web.down.test")).addresses == (Address("10.0.6.1", 80),)
        server.stop()
        started = time.monotonic()
        assert _failure(resolver, _a("web.down.test")).reason == "timeout"
        assert time.monotonic() - started < SHORT_TIMEOUT + SLACK
        server.start()
        assert resolver.resolve(_a("web.down.test")).addresses == (Address("10.0.6.1", 80),)


_UNDER_GEVENT = """
import sys
from prefork_lb.dns import DnsFailure, DnsSource
from prefork_lb.resolver import Resolver  # before patching, as in the gunicorn master
from gevent import monkey
monkey.patch_all()
import gevent

ticks = 0

def tick():
    global ticks
    while True:
        gevent.sleep(0.01)
        ticks += 1

gevent.spawn(tick)
gevent.sleep(0)
resolver = Resolver(("127.0.0.1", int(sys.argv[1])), 1.0)
print(resolver.resolve(DnsSource("a", "web.gevent.test", 80)).addresses[0].key)
try:
    resolver.resolve(DnsSource("a", "silent.gevent.test", 80))
except DnsFailure as failure:
    print(failure.reason, ticks)
"""


def test_resolving_under_gevent_leaves_the_hub_running(server: DnsServer) -> None:
    """In a gevent-patched process other greenlets run while a resolve waits for its answer."""
    server.set_a("web.gevent.test", ["10.0.7.1"])
    server.drop("silent.gevent.test")
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_GEVENT, str(server.port)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    key, outcome = result.stdout.splitlines()
    reason, ticks = outcome.split()
    assert key == "10.0.7.1:80"
    assert reason == "timeout"
    # About 100 ticks of 10 ms fit in the 1 s wait; a blocked hub would give none.
    assert int(ticks) >= 20, result.stdout


def test_resolver_imports_neither_urllib3_nor_gevent() -> None:
    """The resolver can run in the gunicorn master: importing it imports no urllib3 or gevent."""
    code = (
        "import sys, prefork_lb.resolver; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'urllib3', 'gevent', 'gunicorn'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- dnsmasq -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dns() -> Iterator[Dnsmasq]:
    """One dnsmasq for the module's tests, with a TTL of 7 s on its records."""
    with dnsmasq(ttl=7) as started:
        started.set_hosts(
            {
                "web.test": ["10.1.0.1", "10.1.0.2", "::1"],
                "t1.test": ["10.1.1.1"],
                "t2.test": ["10.1.1.2"],
            }
        )
        started.set_srv(
            {"_http._tcp.web.test": [(10, 5, 8080, "t1.test"), (20, 0, 8081, "t2.test")]}
        )
        yield started


def test_dnsmasq_a_and_aaaa(real_dns: Dnsmasq) -> None:
    """dnsmasq's A and AAAA records from its hosts file resolve, with its local TTL."""
    resolver = Resolver(real_dns.address, TIMEOUT)
    assert resolver.resolve(_a("web.test")) == Resolution(
        (Address("10.1.0.1", 80), Address("10.1.0.2", 80), Address("::1", 80)), 7
    )


def test_dnsmasq_srv(real_dns: Dnsmasq) -> None:
    """dnsmasq's SRV records map to addresses: ports, weights (0 becomes 1), backups."""
    resolver = Resolver(real_dns.address, TIMEOUT)
    assert resolver.resolve(_srv("_http._tcp.web.test")).addresses == (
        Address("10.1.1.1", 8080, 5),
        Address("10.1.1.2", 8081, 1, backup=True),
    )


def test_dnsmasq_nxdomain_and_refused(real_dns: Dnsmasq) -> None:
    """An unknown name under .test is NXDOMAIN; one outside it is refused (nothing forwarded)."""
    resolver = Resolver(real_dns.address, TIMEOUT)
    assert _failure(resolver, _a("unknown.test")).reason == "nxdomain"
    assert _failure(resolver, _srv("_http._tcp.unknown.test")).reason == "nxdomain"
    assert _failure(resolver, _a("example.com")).reason == "refused"


def test_dnsmasq_changed_hosts_and_restart() -> None:
    """A changed hosts file is seen after SIGHUP; a killed dnsmasq is a timeout until restarted."""
    with dnsmasq(ttl=1) as server:
        server.set_hosts({"api.test": ["10.2.0.1"]})
        resolver = Resolver(server.address, SHORT_TIMEOUT)
        wait_for(lambda: _keys(resolver, "api.test") == ["10.2.0.1:80"], "dnsmasq serves api.test")
        server.set_hosts({"api.test": ["10.2.0.2", "10.2.0.3"]})
        wait_for(
            lambda: _keys(resolver, "api.test") == ["10.2.0.2:80", "10.2.0.3:80"],
            "dnsmasq re-reads its hosts file",
        )
        server.stop()
        started = time.monotonic()
        assert _failure(resolver, _a("api.test")).reason == "timeout"
        assert time.monotonic() - started < SHORT_TIMEOUT + SLACK
        server.start()
        assert _keys(resolver, "api.test") == ["10.2.0.2:80", "10.2.0.3:80"]


def _keys(resolver: Resolver, name: str) -> list[str]:
    try:
        return [address.key for address in resolver.resolve(_a(name)).addresses]
    except DnsFailure:
        return []
