"""The system's resolver (/etc/resolv.conf, no ``dns_resolver``), drilled in namespaces of its own.

Run as ``unshare --net --mount -- python -m tests.support.system_resolver_drill``
(root). /etc/resolv.conf cannot name a port: its ``nameserver`` is an IP
address, asked on port 53 (dnspython reads it so too). So the drill takes a
network namespace, where port 53 of its own loopback is free, and a mount
namespace, where a resolv.conf of its own is bind-mounted over
/etc/resolv.conf (``unshare --mount`` makes mounts private: the host's file
is never touched, and the mount goes with the namespace however the drill
ends). There it runs the test DNS server on 127.0.0.1:53, asks
``resolver.Resolver(None)`` directly, and runs a balancer whose ``dns`` is a
short name the resolv.conf search list completes. It prints one JSON object;
a test runs it with ``run_drill``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.namespace import run_unshared

__all__ = ["run_drill"]

DOMAIN = "drill.test"  # the search list's domain
NAME = "api"  # a short name: only the search list makes it api.drill.test


def run_drill(timeout: float = 60.0) -> dict[str, Any]:
    """For a test: run the drill in new network and mount namespaces and return its report."""
    return run_unshared(["--net", "--mount"], __name__, [], "the system resolver drill", timeout)


def _drill() -> dict[str, Any]:
    # Imported here: the test process only starts the drill.
    from prefork_lb.dns import parse_dns
    from prefork_lb.resolver import Resolver
    from tests.support.address_backends import AddressBackends
    from tests.support.balancer import BalancerProcess
    from tests.support.dns_balancer import fetch, settle
    from tests.support.dns_server import DnsServer

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        conf = Path(directory) / "resolv.conf"
        conf.write_text(f"nameserver 127.0.0.1\nsearch {DOMAIN}\noptions ndots:1\n")
        subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)
        report["resolv_conf"] = Path("/etc/resolv.conf").read_text()
        server = DnsServer()
        server.port = 53
        with server, AddressBackends(3) as backends:
            full = f"{NAME}.{DOMAIN}"
            server.set_a(full, backends.ips[:2], ttl=1)
            source = parse_dns("dns", f"{NAME}:{backends.port}")
            assert source is not None
            found = Resolver(None, 2.0).resolve(source)
            report["resolved"] = [address.key for address in found.addresses]
            env = {
                "PREFORK_LB_DNS": f"{NAME}:{backends.port}",
                "PREFORK_LB_DNS_INTERVAL": "1",
                "PREFORK_LB_DNS_TIMEOUT": "1",
            }
            with BalancerProcess([], workers=1, env=env) as lb:
                report["served"] = Counter(fetch(lb.port)[1] for _ in range(4))
                # The worker's resolver, asking again while it runs, sees a third address.
                server.set_a(full, backends.ips, ttl=1)
                urls = {f"http://{ip}:{backends.port}" for ip in backends.ips}
                settle(lb, urls, f"{NAME}:{backends.port}")
                report["served_after_change"] = Counter(fetch(lb.port)[1] for _ in range(6))
                report["questions"] = server.queries(full, "A")
    return report


def main() -> None:
    """Bring the namespace's loopback up, run the drill, print its report as JSON."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    json.dump(_drill(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
