"""The Python half of scripts/compare-commits.sh: measure each checkout, print the table.

python -m scripts.bench.compare [--reps N] [--small N] [--large N] [--jobs N]
    --nginx PATH --out DIR --json FILE --command TEXT LABEL=WORKTREE...

Runs alternate between the checkouts (repetition 1 of each, then 2 of each, ...),
``--jobs`` at a time: callgrind's counts do not depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from scripts.bench.callgrind_run import Checkout, ProcessGroups, measure, start_nginx
from scripts.bench.instructions import Run, comparison_json, render_comparison, summarize
from scripts.bench.machine import tool_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.compare", description=__doc__)
    parser.add_argument("--reps", type=int, default=2, help="repetitions per checkout")
    parser.add_argument("--small", type=int, default=100, help="requests in the short run")
    parser.add_argument("--large", type=int, default=600, help="requests in the long run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--nginx", required=True)
    parser.add_argument("--out", type=Path, required=True, help="raw output, emptied first")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--command", default="")
    parser.add_argument("checkouts", nargs="+", metavar="LABEL=WORKTREE")
    return parser


def _checkout(text: str) -> Checkout:
    label, equals, path = text.partition("=")
    if not equals or not label or not path:
        raise argparse.ArgumentTypeError(f"not LABEL=WORKTREE: {text!r}")
    return Checkout(label=label, path=Path(path).resolve())


def _commit(path: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit in the main thread runs the finally clauses that stop every process.
    raise SystemExit(128 + signum)


def run_all(args: argparse.Namespace, checkouts: list[Checkout]) -> list[Run]:
    """Every run, alternating between the checkouts; the first failure stops them all."""
    groups = ProcessGroups()
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        _nginx, backend_port = start_nginx(groups, args.nginx, args.out / "nginx")
        print(
            f"nginx backend on 127.0.0.1:{backend_port}; raw output in {args.out}", file=sys.stderr
        )
        futures: list[Future[Run]] = []
        for rep in range(1, args.reps + 1):
            for checkout in checkouts:
                for requests in (args.small, args.large):
                    out = args.out / f"{checkout.label}-rep{rep}-n{requests}".replace("/", "_")
                    futures.append(
                        pool.submit(
                            measure,
                            groups,
                            checkout,
                            rep=rep,
                            requests=requests,
                            backend_port=backend_port,
                            out=out,
                        )
                    )
        total = len(futures)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                run = future.result()  # raises the first failure
                finished = total - len(pending)
                print(
                    f"  [{finished}/{total}] {run.label} rep {run.rep}, {run.requests} requests:"
                    f" {run.instructions:,} instructions in the worker",
                    file=sys.stderr,
                )
        return [future.result() for future in futures]
    finally:
        groups.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str]) -> int:
    """Measure, print the table, write the JSON; 1 if a run failed."""
    args = _parser().parse_args(argv)
    args.out = args.out.resolve()  # nginx and gunicorn run in other directories
    checkouts = [_checkout(text) for text in args.checkouts]
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    started = time.time()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    try:
        runs = run_all(args, checkouts)
    except RuntimeError as err:
        print(f"a run failed: {err}", file=sys.stderr)
        return 1
    labels = [checkout.label for checkout in checkouts]
    figures = summarize(runs, labels, args.small, args.large)
    print(render_comparison(figures, args.small, args.large, args.command))
    report = {
        "command": args.command,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "reps": args.reps,
            "small": args.small,
            "large": args.large,
            "jobs": args.jobs,
        },
        "revisions": [
            {"label": c.label, "commit": _commit(c.path), "worktree": str(c.path)}
            for c in checkouts
        ],
        "machine": {
            "kernel": platform.release(),
            "valgrind": tool_version(["valgrind", "--version"], r"valgrind-(\S+)"),
            "nginx": tool_version([args.nginx, "-v"], r"nginx/(\S+)"),
        },
        **comparison_json(figures, runs, args.small, args.large),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started is stopped", file=sys.stderr)
        sys.exit(130)
