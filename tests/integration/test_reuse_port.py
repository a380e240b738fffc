"""Several instances on one host share one port (scripts/deploy/reuse-port.env.example).

Each drill runs in a network namespace of its own (``unshare --net``, as root), where
the shipped scripts/deploy/sysctl-reuse-port.conf is applied: the host's kernel
settings are neither needed nor changed. Without that file's tcp_migrate_req a
restart resets the few connections queued on the stopping instance's sockets
(measured here: 1 to 8 of about 4,700 requests from 16 clients, in each of six runs).
"""

from __future__ import annotations

import shlex
from typing import Any

from tests.integration.test_deployment import service
from tests.support import deploy_drills
from tests.support.balancer import ROOT

SYSCTL_FILE = ROOT / "scripts" / "deploy" / "sysctl-reuse-port.conf"


def run_drill(command: str) -> dict[str, Any]:
    """One drill with the shipped sysctl file applied in its network namespace."""
    report = deploy_drills.run_drill(command, "--sysctl", str(SYSCTL_FILE))
    assert report["sysctl"] == {"net.ipv4.tcp_migrate_req": "1"}
    return report


def test_connections_queued_on_a_closing_listener_move_to_another() -> None:
    """With the shipped sysctl, closing one listener of the group resets none of its queue."""
    report = run_drill("queue")
    assert report["accepted"] == report["alive"] == report["connections"], report


def test_one_instance_restarts_while_the_other_serves() -> None:
    """Two instances on one port: one stopped, started again and reloaded under load, none fails."""
    report = run_drill("restart")
    assert report["results"].keys() == {"200"}, report
    assert report["exit_status"] == 0
    assert report["during_stop"] > 0  # the other instance served while this one stopped
    served = report["served"]
    assert served["a"] > 0, report
    assert served["b"] > 0, report
    assert served["a-again"] > 0, report


def test_reuse_port_instances_are_the_template_units() -> None:
    """The env example binds with --reuse-port; the template leaves it the bind, and one UID."""
    text = deploy_drills.ENV_EXAMPLE.read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("GUNICORN_CMD_ARGS=")]
    # systemd takes the quotes off the value; gunicorn splits it as a shell would.
    (value,) = shlex.split(line.partition("=")[2])
    flags = shlex.split(value)
    assert "--reuse-port" in flags
    assert flags[flags.index("--bind") + 1] == "0.0.0.0:80"
    svc = service("prefork_lb@.service")
    assert svc["EnvironmentFile"] == "/etc/prefork_lb/%i.env"
    assert "--bind" not in svc["ExecStart"]
    # Each instance's heartbeat files in its own runtime directory.
    assert svc["RuntimeDirectory"] == "prefork_lb-%i"
    # One dynamic user for every instance: SO_REUSEPORT groups only one UID's sockets.
    assert svc["DynamicUser"] == "yes"
    assert svc["User"] == service("prefork_lb.service")["User"] == "prefork_lb"
