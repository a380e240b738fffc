"""Drills of the files in scripts/deploy, each in a network namespace of its own.

Run as ``unshare --net -- python -m tests.support.deploy_drills COMMAND [--sysctl FILE]``
(root): it brings the namespace's loopback up and applies the sysctl file there, so
the host's settings are neither read nor changed, and its ports (8000 on 0.0.0.0 too)
are its own. It prints one JSON object. ``restart`` and ``queue`` are in
tests/support/reuse_port_drills.py, ``image`` in tests/support/image_drill.py; a test
runs one with ``run_drill``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.image_drill import image_drill
from tests.support.namespace import apply_sysctl_file, run_unshared
from tests.support.reuse_port_drills import ENV_EXAMPLE, queue_drill, restart_drill

__all__ = ["ENV_EXAMPLE", "run_drill"]


def run_drill(command: str, *options: str, timeout: float = 90.0) -> dict[str, Any]:
    """For a test: run one drill in a new network namespace and return its report."""
    return run_unshared(["--net"], __name__, [command, *options], f"drill {command}", timeout)


def main() -> None:
    """Set up the namespace, run one drill, print its report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["restart", "queue", "image"])
    parser.add_argument("--sysctl", type=Path, help="a sysctl.d file to apply first")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    report: dict[str, Any] = {"kernel": os.uname().release}
    report["sysctl"] = apply_sysctl_file(args.sysctl) if args.sysctl else {}
    if args.command == "restart":
        report |= restart_drill(args.clients)
    elif args.command == "queue":
        report |= queue_drill(64)
    else:
        report |= image_drill()
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
