"""Backends from DNS at start, across instances, and through a real dnsmasq.

A name that cannot be resolved stops the start (or, with
``dns_allow_empty_start``, the pool answers 503 until records appear); two
balancers started apart hash a key to the same address; dnsmasq's hosts
file, changed and re-read on SIGHUP, adds and drains addresses.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.conftest import StartBalancer
from tests.support.address_backends import AddressBackends
from tests.support.balancer import BalancerProcess
from tests.support.dns_balancer import backends_document, fetch, settle
from tests.support.dns_server import DnsServer
from tests.support.dnsmasq import Dnsmasq
from tests.support.polling import wait_for

NAME = "api.test"


@pytest.fixture(scope="module")
def addresses() -> Iterator[AddressBackends]:
    """Four backends, 127.0.0.2 to 127.0.0.5, on one port."""
    with AddressBackends(4) as backends:
        yield backends


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """A DNS server that knows no name yet."""
    with DnsServer() as server:
        yield server


def dns_env(server: str, source: str, **more: str) -> dict[str, str]:
    """The environment of a balancer on ``source``, asking ``server``, re-resolving each second."""
    env = {
        "PREFORK_LB_DNS": source,
        "PREFORK_LB_DNS_RESOLVER": server,
        "PREFORK_LB_DNS_INTERVAL": "1",
        "PREFORK_LB_DNS_TIMEOUT": "0.5",
        "PREFORK_LB_DNS_SLOTS": "4",
    }
    return env | {f"PREFORK_LB_{key.upper()}": value for key, value in more.items()}


def test_a_name_that_does_not_resolve_stops_the_start(
    dns: DnsServer, addresses: AddressBackends
) -> None:
    """The master exits with one line naming the setting, the name and the failure."""
    source = f"missing.test:{addresses.port}"
    lb = BalancerProcess([], workers=1, env=dns_env(dns.resolver_setting, source))
    try:
        assert lb.process.wait(timeout=20) != 0
    finally:
        lb.stop(quick=True)
    lines = [line for line in lb.log().splitlines() if "cannot be resolved" in line]
    assert lines == [
        f"Error: prefork_lb configuration: dns: {source!r} cannot be resolved: nxdomain "
        "(no A or AAAA for missing.test) (set dns_allow_empty_start = true to start without "
        "addresses)"
    ]
    assert "Traceback" not in lb.log()


def test_an_empty_start_answers_503_until_records_appear(
    dns: DnsServer, addresses: AddressBackends, start_balancer: StartBalancer
) -> None:
    """With dns_allow_empty_start the balancer starts, answers 503, then serves the records."""
    source = f"{NAME}:{addresses.port}"
    env = dns_env(dns.resolver_setting, source, dns_allow_empty_start="true")
    lb = start_balancer([], env=env)
    assert fetch(lb.port)[0] == 503
    assert "cannot be resolved: nxdomain" in lb.log()
    dns.set_a(NAME, addresses.ips[:2], ttl=1)
    wait_for(lambda: fetch(lb.port)[0] == 200, "records to be served", timeout=5, context=lb.log)
    names = Counter(fetch(lb.port)[1] for _ in range(10))
    assert names == dict.fromkeys(addresses.ips[:2], 5)


def test_a_hash_pool_sends_a_key_to_one_address_in_two_balancers(
    dns: DnsServer, addresses: AddressBackends, start_balancer: StartBalancer
) -> None:
    """Two balancers started apart, hashing on the path over DNS addresses, agree on every key."""
    source = f"{NAME}:{addresses.port}"
    dns.set_a(NAME, addresses.ips, ttl=1)
    env = dns_env(dns.resolver_setting, source, policy="hash", hash_key="path")
    first = start_balancer([], env=env)
    # Records listed in another order: the table depends on the set, not on the answer.
    dns.set_a(NAME, addresses.ips[::-1], ttl=1)
    second = start_balancer([], env=env, workers=1)
    paths = [f"/key-{n}" for n in range(24)]
    chosen = [fetch(first.port, path)[1] for path in paths]
    assert [fetch(second.port, path)[1] for path in paths] == chosen
    assert len(set(chosen)) >= 3  # the keys spread: agreeing is not trivial


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    """A real dnsmasq on the loopback, records with a 1 s TTL."""
    with Dnsmasq(ttl=1) as server:
        yield server


def test_dnsmasq_hosts_changes_add_and_drain_addresses(
    dnsmasq: Dnsmasq, addresses: AddressBackends, start_balancer: StartBalancer
) -> None:
    """Through dnsmasq: addresses added to its hosts file get traffic, removed ones leave."""
    source = f"{NAME}:{addresses.port}"
    dnsmasq.set_hosts({NAME: addresses.ips[:2]})
    lb = start_balancer([], env=dns_env(dnsmasq.resolver_setting, source))
    assert Counter(fetch(lb.port)[1] for _ in range(10)) == dict.fromkeys(addresses.ips[:2], 5)
    dnsmasq.set_hosts({NAME: addresses.ips[:3]})
    settle(lb, _urls(addresses, addresses.ips[:3]), source)
    assert Counter(fetch(lb.port)[1] for _ in range(9)) == dict.fromkeys(addresses.ips[:3], 3)
    dnsmasq.set_hosts({NAME: addresses.ips[2:3]})
    settle(lb, _urls(addresses, addresses.ips[2:3]), source)
    assert {fetch(lb.port)[1] for _ in range(5)} == {addresses.ips[2]}
    assert re.search(rf"dns {re.escape(source)}: 1 address \(", lb.log())


def _urls(addresses: AddressBackends, ips: list[str]) -> set[str]:
    return {f"http://{ip}:{addresses.port}" for ip in ips}


def test_health_follows_the_address_over_a_reload(
    dns: DnsServer, start_balancer: StartBalancer
) -> None:
    """After HUP an address keeps its own health, though the new workers put it in another slot."""
    with AddressBackends(2, first=10) as pair:
        low, high = pair.ips
        source = f"{NAME}:{pair.port}"
        dns.set_a(NAME, [high], ttl=1)
        env = dns_env(dns.resolver_setting, source, max_fails="1", fail_timeout="60")
        lb = start_balancer([], env=env)
        # The higher address takes the first slot, the lower one the second.
        dns.set_a(NAME, [low, high], ttl=1)
        settle(lb, _urls(pair, [low, high]), source)
        pair.stop(high)
        wait_for(
            lambda: (
                fetch(lb.port)[0] == 200 and _states(lb)[f"http://{high}:{pair.port}"] == "down"
            ),
            "the stopped address to be marked down",
            context=lb.log,
        )
        before = set(lb.worker_pids())
        lb.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: len(set(lb.worker_pids()) - before) == 2,
            "new workers after HUP",
            timeout=15,
            context=lb.log,
        )
        lb.wait_for_log("reloaded settings")
        # New workers: the master's fresh answer puts the lower address first now.
        wait_for(lambda: not set(lb.worker_pids()) & before, "the old workers to exit", timeout=15)
        assert _states(lb) == {
            f"http://{low}:{pair.port}": "up",
            f"http://{high}:{pair.port}": "down",
        }
        assert all(fetch(lb.port) == (200, low) for _ in range(4))


def _states(lb: BalancerProcess) -> dict[str, str]:
    document = backends_document(lb)
    return {b["url"]: b["state"] for b in document["backends"] if b["dns"]}


def test_more_addresses_over_time_than_slots_are_served_and_the_gone_ones_closed(
    dns: DnsServer, start_balancer: StartBalancer
) -> None:
    """Five addresses through two slots are each served in turn; connections to gone ones close."""
    with AddressBackends(5, first=20) as five:
        source = f"{NAME}:{five.port}"
        ips = five.ips
        dns.set_a(NAME, ips[:2], ttl=1)
        env = dns_env(dns.resolver_setting, source, dns_slots="2")
        lb = start_balancer([], env=env, workers=1)
        for pair in ([ips[2], ips[3]], [ips[4], ips[0]], [ips[1], ips[2]], [ips[3], ips[4]]):
            dns.set_a(NAME, pair, ttl=1)
            settle(lb, _urls(five, pair), source)
            statuses = Counter(fetch(lb.port) for _ in range(6))
            assert statuses == {(200, pair[0]): 3, (200, pair[1]): 3}, lb.log()[-2000:]
            # The worker kept connections to these two, and closed the others' (gone for good).
            wait_for(
                lambda pair=pair: {ip for ip, n in five.connections.items() if n > 0} == set(pair),
                "connections only to the current addresses",
                context=lambda: str(five.connections),
            )


def test_with_health_checks_a_new_address_waits_for_a_passing_check(
    dns: DnsServer, start_balancer: StartBalancer
) -> None:
    """With active checks on, an address DNS adds gets no request until a check of it passes."""
    with AddressBackends(2, first=30) as pair:
        first, new = pair.ips
        source = f"{NAME}:{pair.port}"
        dns.set_a(NAME, [first], ttl=1)
        env = dns_env(
            dns.resolver_setting,
            source,
            health_check="true",
            health_path="/health",
            health_interval="0.3",
        )
        lb = start_balancer([], env=env)
        pair.sick.add(new)
        dns.set_a(NAME, [first, new], ttl=1)
        url = f"http://{new}:{pair.port}"
        wait_for(lambda: url in _states(lb), "the new address to be published", context=lb.log)
        (shown,) = [b for b in backends_document(lb)["backends"] if b["url"] == url]
        assert shown["state"] == "down"
        assert "waiting for its first passing health check" in shown["reason"]
        assert {fetch(lb.port)[1] for _ in range(10)} == {first}
        assert pair.hits[new] == 0
        pair.sick.discard(new)
        wait_for(lambda: _states(lb)[url] == "up", "a passing check", context=lb.log)
        assert Counter(fetch(lb.port)[1] for _ in range(10)) == {first: 5, new: 5}
