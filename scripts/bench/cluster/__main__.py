"""``python -m scripts.bench.cluster``: what scripts/cluster runs (see there for the options)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from scripts.bench.cluster import netns, scenario
from scripts.bench.cluster.cluster import ROOT, Cluster, keep_logs
from scripts.bench.cluster.configs import Checks
from scripts.bench.cluster.plan import make_layout
from scripts.bench.cluster.report import render

KEEP_LOGS_AS = ROOT / ".cluster" / "last-run"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="3 backends, 3 prefork_lb instances and HAProxy in network namespaces.",
    )
    parser.add_argument("--quick", action="store_true", help="short phases (about 30 s in all)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--connections", type=_positive, default=24, help="load connections")
    parser.add_argument("--workers", type=_positive, default=2, help="workers per instance")
    parser.add_argument(
        "--python-backends", action="store_true", help="Python backends even if nginx is installed"
    )
    parser.add_argument(
        "--python-load", action="store_true", help="the Python driver even if wrk is installed"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="only remove what runs that died left behind"
    )
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"needs a positive whole number, got {text!r}")
    return int(text)


def _tool(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # Unwinds through the finally blocks: the cluster is taken down on the way out.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the cluster, run every phase, take it down; the figures."""
    haproxy, nginx = _tool("haproxy"), None if args.python_backends else _tool("nginx")
    wrk = None if args.python_load else _tool("wrk")
    if haproxy is None:
        raise SystemExit("scripts/cluster needs haproxy (apt-get install -y haproxy)")
    layout = make_layout(os.getpid(), secrets.token_hex(2))
    checks = Checks()
    timing = scenario.Timing.choose(args.quick, args.connections)
    work_dir = Path(tempfile.mkdtemp(prefix=f"{layout.prefix}-"))
    work_dir.chmod(0o755)  # nginx's workers run as nobody
    result: dict[str, Any] = {
        "run": {
            "prefix": layout.prefix,
            "namespaces": layout.namespaces(),
            "cores": os.cpu_count(),
            "backends": "nginx" if nginx else "python",
            "workers": args.workers,
            "connections": args.connections,
            "load": "Python driver (gevent), closed loop" + ("; wrk for throughput" if wrk else ""),
            "haproxy_mode": "tcp, roundrobin, send-proxy-v2, httpchk over PROXY v2",
            "checks": {
                "inter_ms": checks.inter_ms,
                "fall": checks.fall,
                "rise": checks.rise,
                "timeout_ms": checks.timeout_ms,
            },
            "load_average": os.getloadavg()[0],
            "quick": args.quick,
            "logs": str(KEEP_LOGS_AS),
        }
    }
    _progress(f"cluster {layout.prefix}: building namespaces and starting servers...")
    started = time.monotonic()
    try:
        with Cluster(
            layout, work_dir, checks=checks, workers=args.workers, nginx=nginx, haproxy=haproxy
        ) as cluster:
            _progress(
                f"  up in {time.monotonic() - started:.1f} s; throughput with 1, 2, 3 instances..."
            )
            result["throughput"] = scenario.measure_throughput(cluster, timing, wrk)
            _progress("  SIGKILL of one instance under load...")
            result["kill"] = scenario.kill_one(cluster, timing)
            _progress("  rolling HUP under load...")
            result["rolling_hup"] = scenario.rolling_hup(cluster, timing)
            _progress("  hash keys through each instance and through HAProxy...")
            result["hashing"] = scenario.hash_agreement(cluster, timing)
            _progress("  taking the cluster down...")
    finally:
        keep_logs(work_dir, KEEP_LOGS_AS)
    result["run"]["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str]) -> int:
    """Run (or only sweep); exit status 0 when the run completed."""
    args = _parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    swept = netns.sweep()
    if swept:
        _progress(f"removed {len(swept)} namespaces left by runs that died: {' '.join(swept)}")
    if args.sweep:
        return 0
    try:
        result = run(args)
    finally:
        # A second signal during the teardown must not cut it short.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
