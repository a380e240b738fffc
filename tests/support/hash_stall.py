"""How long requests wait while the worker holding the DNS lease rebuilds a hash pool's table.

A real balancer with one worker (so it holds the resolving lease and serves
every request) hashes ``pools`` pools over the A records of one name, served
by ``AddressBackends`` and the test ``DnsServer``. Clients send requests
back to back on keep-alive connections while the records change: each
change leaves out a different address, so every change is a new set and a
new table (``hashing`` remembers tables it built, and a set seen before
would not be built again). ``measure`` returns every request's latency,
while nothing changed and while the records changed.

Run it by hand for the figures in the README (``python -m
tests.support.hash_stall --addresses 32``). It is not a test: on a busy
machine a request can wait tens of milliseconds for the CPU whatever the
balancer does. ``tests/integration/test_hash_stall.py`` checks the same
behaviour in CPU time, which a busy machine does not stretch.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from tests.support.address_backends import AddressBackends
from tests.support.balancer import BalancerProcess
from tests.support.dns_balancer import settle
from tests.support.dns_server import DnsServer

NAME = "hashed.test"
# Records live 1 s and dns_interval is 2 s: a change is published within 2 s.
CHANGE_EVERY_S = 2.5


@dataclass
class Latencies:
    """Seconds each request took, while nothing changed and while the records changed."""

    steady: list[float] = field(default_factory=list)
    changing: list[float] = field(default_factory=list)
    changes: int = 0


@dataclass
class HashedBalancer:
    """The balancer, its DNS server and the backends its name resolves to."""

    lb: BalancerProcess
    dns: DnsServer
    backends: AddressBackends

    def urls(self, ips: list[str]) -> set[str]:
        """The backend URLs of these addresses."""
        return {f"http://{ip}:{self.backends.port}" for ip in ips}

    @property
    def source(self) -> str:
        """The DNS source's label, as ``/backends`` names it."""
        return f"{NAME}:{self.backends.port}"


def _config(directory: Path, port: int, dns: DnsServer, addresses: int, pools: int) -> Path:
    lines = [
        f'dns_resolver = "{dns.resolver_setting}"',
        "dns_interval = 2",
        "dns_timeout = 0.5",
        # Room for every address and for one draining while its successor is active.
        f"dns_slots = {addresses + 2}",
        'policy = "hash"',
        'hash_key = "header:X-User"',
        f'dns = "{NAME}:{port}"',
    ]
    for number in range(1, pools):
        lines += [
            f"[pools.more{number}]",
            'policy = "hash"',
            'hash_key = "header:X-User"',
            f'dns = "{NAME}:{port}"',
            f"dns_slots = {addresses + 2}",
        ]
    for number in range(1, pools):
        lines += ["[[routes]]", f'path_prefix = "/more{number}"', f'pool = "more{number}"']
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def hashed_balancer(addresses: int, pools: int = 1) -> Iterator[HashedBalancer]:
    """One worker hashing ``pools`` pools over ``addresses`` A records (one more is spare)."""
    with (
        AddressBackends(addresses + 1) as backends,
        DnsServer() as dns,
        TemporaryDirectory(prefix="prefork_lb-stall-") as directory,
    ):
        dns.set_a(NAME, backends.ips[:addresses], ttl=1)
        config = _config(Path(directory), backends.port, dns, addresses, pools)
        env = {"PREFORK_LB_CONFIG": str(config)}
        with BalancerProcess([], workers=1, env=env) as lb:
            balancer = HashedBalancer(lb, dns, backends)
            settle(lb, balancer.urls(backends.ips[:addresses]), balancer.source, timeout=20)
            yield balancer


def _client(port: int, number: int, stop: threading.Event, into: list[list[float]]) -> None:
    """Requests back to back until ``stop``; each latency goes to the list ``into`` holds now."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    sent = 0
    try:
        while not stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/", headers={"X-User": f"user-{number}-{sent}"})
            response = conn.getresponse()
            response.read()
            into[0].append(time.perf_counter() - started)
            assert response.status == 200, response.status
            sent += 1
    finally:
        conn.close()


def measure(
    balancer: HashedBalancer, changes: int, clients: int = 2, steady_s: float = 2.0
) -> Latencies:
    """Latencies for ``steady_s`` seconds of unchanged records, then over ``changes`` changes."""
    ips = balancer.backends.ips
    count = len(ips) - 1
    latencies = Latencies()
    into = [latencies.steady]
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(balancer.lb.port, n, stop, into), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(steady_s)
        into[0] = latencies.changing
        kept = ips[:count]
        for change in range(changes):
            # Each change drops a different address for the spare one: a set not seen before.
            kept = [ip for number, ip in enumerate(ips) if number != change % len(ips)][:count]
            balancer.dns.set_a(NAME, kept, ttl=1)
            # Not polling /backends meanwhile: the same worker would serve those requests too.
            time.sleep(CHANGE_EVERY_S)
            latencies.changes += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=25)
    # Each change was taken up in time: the last one at least.
    settle(balancer.lb, balancer.urls(kept), balancer.source, timeout=5)
    return latencies


def describe(latencies: list[float]) -> str:
    """p50, p99 and the five slowest of these latencies, in milliseconds."""
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered)} requests: p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, slowest "
        + ", ".join(f"{latency * 1000:.1f}" for latency in reversed(ordered[-5:]))
        + " ms"
    )


def main() -> None:
    """Print the latencies for the addresses and pools asked for."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.hash_stall")
    parser.add_argument("--addresses", type=int, default=32)
    parser.add_argument("--pools", type=int, default=1)
    parser.add_argument("--changes", type=int, default=6)
    arguments = parser.parse_args()
    with hashed_balancer(arguments.addresses, arguments.pools) as balancer:
        figures = measure(balancer, arguments.changes)
    print(
        f"{arguments.addresses} addresses, {arguments.pools} hash pool(s), "
        f"{figures.changes} changes"
    )
    print(f"  steady:   {describe(figures.steady)}")
    print(f"  changing: {describe(figures.changing)}")


if __name__ == "__main__":
    main()
