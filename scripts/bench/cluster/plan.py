"""The cluster's layout as values: namespace and interface names, addresses, ports.

Every name carries the run's prefix, ``plbc-PID-TAG``: the creating process's
id (so a later run can tell a leftover of a dead run from a live run's
namespace) and four random hex digits (so two runs never clash, even when a
pid is reused). Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking
range, never routed) and exist only inside the run's namespaces; the bridge
lives in a namespace of its own, so the host's network is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

NAME_PREFIX = "plbc"
SUBNET_BITS = 24
_RUN = re.compile(rf"^({NAME_PREFIX}-(\d+)-[0-9a-f]{{4}})-[a-z0-9]+$")

BACKEND_PORT = 8080
INSTANCE_PORT = 8000
FRONT_PORT = 80


@dataclass(frozen=True, slots=True)
class Host:
    """One network namespace with one veth into the bridge."""

    role: str  # "backend", "instance", "front", "client"
    short: str  # be1, lb2, ha, client: the namespace's and interfaces' suffix
    address: str  # its address on the bridge, 198.18.0.x

    def namespace(self, prefix: str) -> str:
        """The namespace's name for the run ``prefix``."""
        return f"{prefix}-{self.short}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Every host of one run, and the names of what joins them."""

    prefix: str
    tag: str
    hosts: tuple[Host, ...]

    @property
    def switch_namespace(self) -> str:
        """The namespace that holds the bridge (and nothing with an address)."""
        return f"{self.prefix}-sw"

    @property
    def bridge(self) -> str:
        """The bridge's interface name (at most 15 characters, as Linux requires)."""
        return f"{self.tag}-br"

    def host_interface(self, host: Host) -> str:
        """The veth end inside the host's namespace."""
        return f"{self.tag}-{host.short}"

    def switch_interface(self, host: Host) -> str:
        """The veth end inside the switch namespace, a port of the bridge."""
        return f"{self.tag}-{host.short}-sw"

    def namespaces(self) -> list[str]:
        """Every namespace of the run, the switch first."""
        return [self.switch_namespace, *(host.namespace(self.prefix) for host in self.hosts)]

    def of_role(self, role: str) -> list[Host]:
        """The hosts of one role, in order."""
        return [host for host in self.hosts if host.role == role]

    @property
    def front(self) -> Host:
        """HAProxy's host."""
        return self.of_role("front")[0]

    @property
    def client(self) -> Host:
        """The host the load comes from."""
        return self.of_role("client")[0]


def make_layout(pid: int, tag: str, backends: int = 3, instances: int = 3) -> Layout:
    """The layout of run ``pid``/``tag``: front .2, client .3, backends .11+, instances .21+."""
    if not re.fullmatch(r"[0-9a-f]{4}", tag):
        raise ValueError(f"a run tag is four hex digits, got {tag!r}")
    hosts = [Host("front", "ha", "198.18.0.2"), Host("client", "client", "198.18.0.3")]
    hosts += [Host("backend", f"be{n}", f"198.18.0.{10 + n}") for n in range(1, backends + 1)]
    hosts += [Host("instance", f"lb{n}", f"198.18.0.{20 + n}") for n in range(1, instances + 1)]
    return Layout(f"{NAME_PREFIX}-{pid}-{tag}", tag, tuple(hosts))


def run_of(namespace: str) -> tuple[str, int] | None:
    """(prefix, creating pid) of a namespace a cluster run made; None for any other."""
    match = _RUN.match(namespace)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def stale_namespaces(namespaces: Iterable[str], run_alive: Callable[[int], bool]) -> list[str]:
    """The namespaces of cluster runs whose creating process is gone, in order."""
    stale = []
    for name in namespaces:
        run = run_of(name)
        if run is not None and not run_alive(run[1]):
            stale.append(name)
    return stale
