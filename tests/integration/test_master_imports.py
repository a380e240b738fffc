"""The master never imports urllib3: checked in a real gunicorn master, through a reload.

The balancer runs as ``gunicorn -c gunicorn.conf.py`` does (gunicorn's own
entry point, the project's config file, its hooks), in an interpreter with
an audit hook installed first. The hook sees every import the process makes
and writes down those of prefork_lb and urllib3 modules, with the process
that made them; the forked workers inherit it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.balancer import ROOT, clean_environ
from tests.support.dns_server import DnsServer
from tests.support.polling import wait_for

# Runs gunicorn as its console script does, once the audit hook is in place.
_AUDITED_GUNICORN = """
import json, os, sys, traceback

report, master, busy = sys.argv.pop(1), os.getpid(), False

def audit(event, args):
    global busy
    if event != "import" or busy or str(args[0]).split(".")[0] not in ("prefork_lb", "urllib3"):
        return
    busy = True  # formatting the stack imports modules too
    try:
        in_master = os.getpid() == master
        stack = "".join(traceback.format_stack()[:-1]) if in_master else ""
        with open(report, "a") as out:
            out.write(json.dumps([in_master, str(args[0]), stack]) + "\\n")
    finally:
        busy = False

sys.addaudithook(audit)
from gunicorn.app.wsgiapp import run
sys.argv[0] = "gunicorn"
sys.exit(run())
"""


def _ready_workers(log: Path) -> int:
    return len(re.findall(r"prefork_lb: worker \d+ ready", log.read_text(errors="replace")))


def _start_reload_stop(report: Path, log: Path, settings: dict[str, str]) -> str | None:
    """Run the audited balancer through start, HUP and TERM; what went wrong, if anything."""
    command = [
        sys.executable,
        "-c",
        _AUDITED_GUNICORN,
        str(report),
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "--bind=127.0.0.1:0",
        "--workers=1",
        "--graceful-timeout=5",
    ]
    with log.open("wb") as out:
        master = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_environ(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def ready_or_gone(count: int) -> bool:
        return master.poll() is not None or _ready_workers(log) >= count

    try:
        wait_for(lambda: ready_or_gone(1), "a worker ready", 20)
        master.send_signal(signal.SIGHUP)  # on_reload, and gunicorn.conf.py read again
        wait_for(lambda: ready_or_gone(2), "a worker after HUP", 20)
        master.send_signal(signal.SIGTERM)
        status = master.wait(timeout=15)
    except (AssertionError, subprocess.TimeoutExpired) as err:
        return f"{err}\n{log.read_text(errors='replace')}"
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    return None if status == 0 else f"exit status {status}\n{log.read_text(errors='replace')}"


@pytest.mark.parametrize("source", ["listed", "dns"])
def test_master_never_imports_urllib3(source: str, tmp_path: Path) -> None:
    """Starting, forking, reloading on HUP and stopping, the master never imports urllib3.

    Also when it resolves backends through DNS itself, at start and on HUP.
    """
    report = tmp_path / "imports.jsonl"
    with DnsServer() as dns:
        dns.set_a("api.test", ["127.0.0.1"])
        settings = (
            {"PREFORK_LB_BACKENDS": "http://127.0.0.1:9"}
            if source == "listed"
            else {"PREFORK_LB_DNS": "api.test:9", "PREFORK_LB_DNS_RESOLVER": dns.resolver_setting}
        )
        problem = _start_reload_stop(report, tmp_path / "balancer.log", settings)

    imports = [json.loads(line) for line in report.read_text().splitlines()]
    in_master = {module: stack for is_master, module, stack in imports if is_master}
    urllib3_in_master = [module for module in in_master if module.split(".")[0] == "urllib3"]
    assert not urllib3_in_master, (
        "the master imported urllib3 (it must be imported in each worker, after gevent "
        "has patched it; see DESIGN.md). First import, from:\n" + in_master[urllib3_in_master[0]]
    )
    assert problem is None, problem
    # The hook saw the master's imports and, across the fork, the worker's.
    assert "prefork_lb.hooks" in in_master
    assert ("prefork_lb.resolver" in in_master) == (source == "dns")
    assert "urllib3" in {module for is_master, module, _ in imports if not is_master}
