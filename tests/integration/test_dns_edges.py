"""Backends from DNS at their edges: restarts, scarce slots, outages and the system resolver.

Saved states of addresses across restarts, the ejection limit over a pool
with empty slots, a drained slot freed for an address left out, a DNS
server back from an outage, and /etc/resolv.conf (in namespaces of the
test's own). Each test starts the balancers it needs (they differ in their
settings) in front of backends on loopback addresses, named by a real DNS
server whose records the test changes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import StartBalancer
from tests.support import system_resolver_drill
from tests.support.address_backends import AddressBackends
from tests.support.backend import ScriptedBackend, fixed
from tests.support.balancer import BalancerProcess
from tests.support.dns_balancer import backends_document, fetch, post_admin, settle
from tests.support.dns_server import DnsServer
from tests.support.polling import wait_for

NAME = "api.test"
TOKEN = "dns-edges-admin-token-0123456789"


@pytest.fixture(scope="module")
def addresses() -> Iterator[AddressBackends]:
    """Three backends, 127.0.0.40 to 127.0.0.42, on one port."""
    with AddressBackends(3, first=40) as backends:
        yield backends


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """A DNS server that knows no name yet."""
    with DnsServer() as server:
        yield server


def dns_env(server: DnsServer, port: int, **more: str) -> dict[str, str]:
    """A balancer on NAME:port asking ``server``, re-resolving each second, with the token."""
    env = {
        "PREFORK_LB_DNS": f"{NAME}:{port}",
        "PREFORK_LB_DNS_RESOLVER": server.resolver_setting,
        "PREFORK_LB_DNS_INTERVAL": "1",
        "PREFORK_LB_DNS_TIMEOUT": "0.5",
        "PREFORK_LB_DNS_SLOTS": "4",
        "PREFORK_LB_ADMIN_TOKEN": TOKEN,
    }
    return env | {f"PREFORK_LB_{key.upper()}": value for key, value in more.items()}


def urls(addresses: AddressBackends, ips: list[str]) -> set[str]:
    """The backend URLs of these addresses."""
    return {f"http://{ip}:{addresses.port}" for ip in ips}


def admin_states(lb: BalancerProcess) -> dict[str, tuple[str, int]]:
    """Each DNS address's (admin_state, weight), by name."""
    return {
        b["name"]: (b["admin_state"], b["weight"])
        for b in backends_document(lb)["backends"]
        if b["dns"]
    }


def test_saved_states_of_dns_addresses_come_back_after_a_restart(
    dns: DnsServer, addresses: AddressBackends, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """A drain and a weight saved by ip:port return at restart, at once or when DNS gives it."""
    first, second, _ = addresses.ips
    kept, drained = f"{first}:{addresses.port}", f"{second}:{addresses.port}"
    source = f"{NAME}:{addresses.port}"
    env = dns_env(dns, addresses.port, state_file=str(tmp_path / "state.json"))
    dns.set_a(NAME, [first, second], ttl=1)
    before = start_balancer([], env=env)
    assert post_admin(before, TOKEN, drained, "state", "drain") == 200
    assert post_admin(before, TOKEN, kept, "weight", 3) == 200
    before.stop()

    # The drained address is not in DNS at the restart: its state waits for it.
    dns.set_a(NAME, [first], ttl=1)
    restarted_at = time.time()
    waiting = start_balancer([], env=env)
    waiting.wait_for_log(rf"address {drained} is not in DNS now; its saved state drain waits")
    assert admin_states(waiting) == {kept: ("ready", 3)}
    # A write meanwhile rewrites the file and keeps the waiting state in it.
    assert post_admin(waiting, TOKEN, kept, "weight", 2) == 200
    saved = json.loads((tmp_path / "state.json").read_text())["backends"]
    # With when it began to wait: a later restart does not start its 10 minutes again.
    since = saved[drained].pop("waiting_since")
    assert restarted_at <= since <= time.time()
    assert saved == {
        drained: {"state": "drain", "weight": 0},
        kept: {"state": "ready", "weight": 2},
    }
    dns.set_a(NAME, [first, second], ttl=1)
    settle(waiting, urls(addresses, [first, second]), source)
    assert admin_states(waiting) == {kept: ("ready", 2), drained: ("drain", 1)}
    assert Counter(fetch(waiting.port)[1] for _ in range(6)) == {first: 6}
    waiting.stop()

    # In DNS at the restart: applied before the first request.
    again = start_balancer([], env=env)
    assert admin_states(again) == {kept: ("ready", 2), drained: ("drain", 1)}
    assert Counter(fetch(again.port)[1] for _ in range(6)) == {first: 6}


def test_empty_slots_do_not_widen_the_ejection_limit(
    dns: DnsServer, start_balancer: StartBalancer
) -> None:
    """Two addresses in four slots, both failing: eject_max_percent 50 ejects one, not both."""
    failing = [ScriptedBackend(f"failing-{i}").start() for i in (1, 2)]
    try:
        for backend in failing:
            backend.route("/", fixed(503, "Service Unavailable"))
        srv = "_http._tcp.eject.test"
        dns.set_srv(srv, [(10, 1, b.port, "local.test") for b in failing], ttl=1)
        dns.set_a("local.test", ["127.0.0.1"], ttl=60)
        env = dns_env(dns, 0, eject_consecutive_5xx="1", eject_time="60", eject_max_percent="50")
        env.pop("PREFORK_LB_DNS")
        lb = start_balancer([], env=env | {"PREFORK_LB_DNS_SRV": srv}, workers=1)
        for _ in range(6):
            fetch(lb.port)
        shown = [b for b in backends_document(lb)["backends"] if b["dns"]]
        assert len(shown) == 2
        assert sorted(b["ejected"] for b in shown) == [False, True], lb.log()
    finally:
        for backend in failing:
            backend.stop()


def test_a_drained_slot_is_freed_once_its_last_request_ends(
    dns: DnsServer, addresses: AddressBackends, start_balancer: StartBalancer
) -> None:
    """With one slot and a 30 s TTL, the replacement address serves soon after the last request."""
    old, new, _ = addresses.ips
    source = f"{NAME}:{addresses.port}"
    dns.set_a(NAME, [old], ttl=1)
    env = dns_env(dns, addresses.port, dns_slots="1", dns_interval="30")
    lb = start_balancer([], env=env, workers=1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(fetch, lb.port, "/slow?s=2")
        wait_for(lambda: _in_flight(lb) == 1, "the slow request")
        # The next resolve sees the change, then none for 30 s: the long TTL.
        dns.set_a(NAME, [new], ttl=30)
        lb.wait_for_log(rf"more addresses than its 1 slots \(dns_slots\), left out: {new}")
        assert slow.result() == (200, old)
    ended = time.monotonic()
    settle(lb, urls(addresses, [new]), source, timeout=5)
    assert fetch(lb.port) == (200, new)
    assert time.monotonic() - ended < 5


def _in_flight(lb: BalancerProcess) -> int:
    return sum(b["in_flight"] for b in backends_document(lb)["backends"])


def test_a_dns_server_back_up_is_asked_again_within_the_backoff(
    dns: DnsServer, addresses: AddressBackends, start_balancer: StartBalancer
) -> None:
    """With dns_interval 30 s, a server down at start and back 2 s later is used within seconds."""
    first = addresses.ips[0]
    source = f"{NAME}:{addresses.port}"
    dns.set_a(NAME, [first], ttl=60)
    dns.stop()
    env = dns_env(dns, addresses.port, dns_interval="30", dns_allow_empty_start="true")
    lb = start_balancer([], env=env, workers=1)
    lb.wait_for_log(r"dns api\.test:\d+: timeout")
    time.sleep(2)
    dns.start()
    back = time.monotonic()
    # Tries 1 s, 2 s, 4 s ... apart: the next comes within 4 s (plus a 0.5 s timeout).
    settle(lb, urls(addresses, [first]), source, timeout=10)
    assert time.monotonic() - back < 10
    assert fetch(lb.port) == (200, first)


def test_without_dns_resolver_the_system_resolv_conf_is_used() -> None:
    """With no dns_resolver, the nameserver and search list of /etc/resolv.conf answer."""
    report = system_resolver_drill.run_drill()
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert [key.rpartition(":")[0] for key in report["resolved"]] == ips[:2], report
    assert report["served"] == dict.fromkeys(ips[:2], 2), report
    assert report["served_after_change"] == dict.fromkeys(ips, 2), report
    assert report["questions"] >= 3, report
