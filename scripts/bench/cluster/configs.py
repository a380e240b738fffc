"""The configuration files and command lines of the cluster's servers, as text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scripts.bench.cluster.plan import BACKEND_PORT, FRONT_PORT, INSTANCE_PORT, Host

# What the backends add to every answer, so the client can tell who served it.
BACKEND_HEADER = "X-Backend"  # the backend host's name (be1...)
PEER_HEADER = "X-Backend-Peer"  # the address that connected to it: the instance
READY_PATH = "/_prefork_lb/ready"
HASH_HEADER = "X-User"


@dataclass(frozen=True, slots=True)
class Checks:
    """HAProxy's health checks of the instances: every ``inter_ms``, ``fall`` and ``rise``."""

    inter_ms: int = 500
    fall: int = 2
    rise: int = 2
    # A HUP stops the old workers as soon as the new ones are forked: until a new one
    # has loaded the app, connections wait in the listening socket. On a loaded 2-core
    # machine that took over a second; a check must not give up before it ends.
    timeout_ms: int = 2000

    @property
    def detection_bound_s(self) -> float:
        """The longest an instance that died may stay UP: ``fall`` checks, ``inter`` apart."""
        return self.fall * self.inter_ms / 1000


def nginx_config(host: Host, work_dir: Path, as_root: bool) -> str:
    """One nginx (one worker) answering 200 with its name and its peer's address."""
    temp = "\n".join(
        f"    {kind}_temp_path {work_dir}/nginx-temp-{host.short}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Started as root, nginx runs its workers as nobody: name the group, which differs
    # between distributions (nogroup on Debian).
    user = "user nobody nogroup;\n" if as_root else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {work_dir}/nginx-{host.short}.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{temp}
    server {{
        listen {host.address}:{BACKEND_PORT} backlog=1024;
        location / {{
            add_header {BACKEND_HEADER} {host.short} always;
            add_header {PEER_HEADER} $remote_addr always;
            return 200 "{host.short}\\n";
        }}
    }}
}}
"""


def haproxy_config(front: Host, instances: list[Host], checks: Checks, stats_socket: Path) -> str:
    """HAProxy in TCP mode: PROXY v2 to each instance, HTTP checks of its ready endpoint."""
    servers = "\n".join(
        f"    server {host.short} {host.address}:{INSTANCE_PORT}" for host in instances
    )
    return f"""global
    stats socket {stats_socket} level admin
    nbthread 1
    # One line per client connection (the load keeps them open): who served it, how it ended.
    log stderr format raw local0
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check {checks.timeout_ms}ms
    # A connection refused by a dead instance is retried on another one at once.
    retries 2
    option redispatch 1
frontend cluster
    bind {front.address}:{FRONT_PORT}
    default_backend instances
backend instances
    balance roundrobin
    option httpchk
    http-check send meth GET uri {READY_PATH} ver HTTP/1.1 hdr Host cluster
    http-check expect status 200
    # The checks go over PROXY v2 too (a LOCAL header), as the traffic does.
    default-server check send-proxy-v2 check-send-proxy inter {checks.inter_ms}ms fall {checks.fall} rise {checks.rise}
{servers}
"""  # noqa: E501


def instance_environment(backends: list[Host]) -> dict[str, str]:
    """prefork_lb's settings: the backends, hashed on a header (round robin without it)."""
    return {
        "PREFORK_LB_BACKENDS": ",".join(
            f"http://{host.address}:{BACKEND_PORT}" for host in backends
        ),
        "PREFORK_LB_POLICY": "hash",
        "PREFORK_LB_HASH_KEY": f"header:{HASH_HEADER}",
    }


def instance_arguments(host: Host, front: Host, workers: int) -> list[str]:
    """gunicorn's flags: its own address, PROXY protocol from HAProxy's address alone."""
    return [
        f"--bind={host.address}:{INSTANCE_PORT}",
        f"--workers={workers}",
        "--graceful-timeout=5",
        "--proxy-protocol=v2",
        f"--proxy-allow-from={front.address}",
    ]
