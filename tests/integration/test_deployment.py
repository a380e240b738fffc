"""The process-manager files in scripts/deploy say what they should, and supervisor runs them.

The systemd units are checked as text, with ``systemd-analyze verify`` when the machine has
it, and the ``Type=notify`` claim against gunicorn itself. The supervisor program section is
run by a real supervisord: start, reload with HUP, stop.
"""

from __future__ import annotations

import configparser
import contextlib
import http.client
import os
import re
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gunicorn.config import Config

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend
from tests.support.balancer import GUNICORN, ROOT, child_pids, clean_environ, process_table
from tests.support.client import get_name, send

DEPLOY = ROOT / "scripts" / "deploy"
INSTALL_DIR = "/opt/prefork_lb"
VENV_BIN = Path(sys.executable).parent

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A systemd unit file as {section: {key: [values in order]}}, continuation lines joined."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    logical = re.sub(r"\\\n[ \t]*", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def graceful_timeout() -> int:
    """Gunicorn's graceful_timeout as gunicorn.conf.py leaves it."""
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return int(settings.get("graceful_timeout", Config().graceful_timeout))


def service(name: str) -> dict[str, str]:
    """The [Service] section of a unit in scripts/deploy, each key's last value."""
    unit = parse_unit((DEPLOY / name).read_text())
    return {key: values[-1] for key, values in unit["Service"].items()}


def test_systemd_unit_runs_gunicorn_as_a_notify_service() -> None:
    """The unit waits for READY=1, reloads with HUP, reads the env file, stops gracefully."""
    svc = service("prefork_lb.service")
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["EnvironmentFile"] == "-/etc/prefork_lb/env"
    assert svc["KillMode"] == "mixed"
    assert svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) > graceful_timeout()
    assert svc["Restart"] == "on-failure"
    command = svc["ExecStart"].split()
    assert command[:3] == [
        f"{INSTALL_DIR}/.venv/bin/gunicorn",
        "-c",
        f"{INSTALL_DIR}/gunicorn.conf.py",
    ]
    assert command[command.index("--worker-tmp-dir") + 1] == f"/run/{svc['RuntimeDirectory']}"
    assert svc["DynamicUser"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"


def test_systemd_template_differs_only_where_an_instance_must() -> None:
    """prefork_lb@.service is prefork_lb.service with per-instance settings and directories."""
    main = parse_unit((DEPLOY / "prefork_lb.service").read_text())
    template = parse_unit((DEPLOY / "prefork_lb@.service").read_text())
    per_instance = {"Description", "EnvironmentFile", "ExecStart", "RuntimeDirectory"}
    for name, section in main.items():
        assert {k: v for k, v in template[name].items() if k not in per_instance} == {
            k: v for k, v in section.items() if k not in per_instance
        }, name
    svc = {key: values[-1] for key, values in template["Service"].items()}
    assert svc["EnvironmentFile"] == "/etc/prefork_lb/%i.env"
    assert svc["RuntimeDirectory"] == "prefork_lb-%i"
    assert "--worker-tmp-dir /run/prefork_lb-%i" in svc["ExecStart"]
    assert "--bind" not in svc["ExecStart"]


@pytest.mark.parametrize("name", ["prefork_lb.service", "prefork_lb@.service"])
def test_systemd_analyze_verify_finds_nothing(name: str, tmp_path: Path) -> None:
    """systemd-analyze verify has nothing to say about the unit (installed over this checkout)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point the install dir at this checkout.
    text = (DEPLOY / name).read_text()
    text = text.replace(f"{INSTALL_DIR}/.venv/bin/gunicorn", str(GUNICORN))
    text = text.replace(INSTALL_DIR, str(ROOT))
    unit = tmp_path / name.replace("@.", "@verify.")
    unit.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 even for an unknown key or a bad value: it only prints a warning.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_master_sends_ready_to_the_notify_socket(start_balancer: StartBalancer) -> None:
    """Gunicorn's master (not a worker) sends READY=1 to $NOTIFY_SOCKET, as Type=notify needs."""
    backend = ScriptedBackend("only")
    backend.start()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        address = f"prefork_lb-test-{id(notify)}-{time.monotonic_ns()}"
        notify.bind("\0" + address)
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify.settimeout(20)
        lb = start_balancer([backend.url], workers=1, env={"NOTIFY_SOCKET": "@" + address})
        message, ancillary, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
        assert b"READY=1" in message.split(b"\n")
        credentials = [d for _, kind, d in ancillary if kind == socket.SCM_CREDENTIALS]
        (sender, _, _) = struct.unpack("iII", credentials[0])
        assert sender == lb.pid
    finally:
        notify.close()
        backend.stop()


# --- supervisor ------------------------------------------------------------------------


def supervisor_program() -> dict[str, str]:
    """The [program:prefork_lb] section of scripts/deploy/supervisor.conf."""
    parser = configparser.RawConfigParser()
    parser.read(DEPLOY / "supervisor.conf")
    return dict(parser["program:prefork_lb"])


def test_supervisor_program_stops_gracefully() -> None:
    """supervisor TERMs the master alone, waits past the graceful timeout, then kills the group."""
    program = supervisor_program()
    assert program["stopsignal"] == "TERM"
    assert int(program["stopwaitsecs"]) > graceful_timeout()
    assert program["stopasgroup"] == "false"
    assert program["killasgroup"] == "true"
    assert program["autorestart"] == "unexpected"
    assert program["command"].startswith(
        f"{INSTALL_DIR}/.venv/bin/gunicorn -c {INSTALL_DIR}/gunicorn.conf.py "
    )


class Supervisor:
    """A supervisord in the foreground with its own socket, pidfile and logs in ``home``."""

    def __init__(self, home: Path, port: int, backends: list[str]) -> None:
        self.home = home
        self.conf = home / "supervisord.conf"
        program = supervisor_program()
        # This machine's stand-ins for the install, settings and log directories.
        moves = {
            f"{INSTALL_DIR}/.venv/bin/gunicorn": str(GUNICORN),
            INSTALL_DIR: str(ROOT),
            "/etc/prefork_lb": str(home),
            "/var/log/prefork_lb": str(home),
        }
        for key in program:
            for old, new in moves.items():
                program[key] = program[key].replace(old, new)
        program["command"], binds = re.subn(
            r"--bind \S+", f"--bind 127.0.0.1:{port}", program["command"]
        )
        assert binds == 1
        program["command"] += " --workers 2"
        # Dropping to user prefork_lb needs root and that user; the test runs as it is.
        del program["user"]
        settings = re.fullmatch(r'PREFORK_LB_CONFIG="(.+)"', program["environment"])
        assert settings is not None, program["environment"]
        Path(settings[1]).write_text(
            "backends = [" + ", ".join(f'"{url}"' for url in backends) + "]\n"
        )
        self.error_log = Path(program["stderr_logfile"])
        self.access_log = Path(program["stdout_logfile"])
        self.stopwaitsecs = int(program["stopwaitsecs"])
        self.known_master: int | None = None
        lines = [
            "[unix_http_server]",
            f"file={home}/supervisor.sock",
            "[supervisord]",
            f"logfile={home}/supervisord.log",
            f"pidfile={home}/supervisord.pid",
            f"childlogdir={home}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{home}/supervisor.sock",
            "[program:prefork_lb]",
            *(f"{key}={value}" for key, value in program.items()),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._output = (home / "supervisord.out").open("wb")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(self.conf)],
            env=clean_environ({}),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def ctl(self, *args: str) -> str:
        """Run supervisorctl against this supervisord; return what it printed."""
        result = subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=self.stopwaitsecs + 15,
            check=False,
        )
        return result.stdout + result.stderr

    def logs(self) -> str:
        """Everything supervisord and the program logged, for failure messages."""
        parts = []
        # In the foreground supervisord logs to stdout too, where its own crash would show.
        for path in (self.home / "supervisord.out", self.error_log):
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def ready_workers(self) -> int:
        """How many workers have logged that they serve, since supervisord started."""
        if not self.error_log.exists():
            return 0
        return len(re.findall(r"prefork_lb: worker \d+ ready", self.error_log.read_text()))

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``condition()`` until it is true; fail with the logs when the time is up."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"supervisord exited while waiting for {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout}s:\n{self.logs()}")
            time.sleep(0.05)

    def master_pid(self) -> int:
        """The gunicorn master's pid, as supervisor knows it."""
        self.known_master = int(self.ctl("pid", "prefork_lb").strip())
        return self.known_master

    def shutdown(self) -> None:
        """Stop supervisord (it stops the program first); kill what lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stopwaitsecs + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()
        # A program supervisord could not stop must not outlive the test either.
        for entry in process_table():
            if self.known_master and entry.group == self.known_master and entry.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_supervisor(port: int, backends: list[str]) -> Iterator[Supervisor]:
    """A supervisord in a short temporary directory (unix socket paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="prefork_lb-sv-") as home:
        supervisor = Supervisor(Path(home), port, backends)
        try:
            yield supervisor
        finally:
            supervisor.shutdown()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_supervisor_starts_reloads_and_stops_the_balancer(
    three_backends: list[ScriptedBackend],
) -> None:
    """Under supervisord it rotates, HUP swaps its workers under traffic, and stop is clean."""
    port = _free_port()
    with running_supervisor(port, [b.url for b in three_backends]) as sv:
        sv.wait_for("RUNNING program", lambda: "RUNNING" in sv.ctl("status", "prefork_lb"))
        sv.wait_for("2 ready workers", lambda: sv.ready_workers() >= 2)
        master = sv.master_pid()
        old_workers = child_pids(master)
        assert len(old_workers) == 2

        names = [get_name(port) for _ in range(6)]
        start = names.index("backend-1")
        assert names[start : start + 3] == ["backend-1", "backend-2", "backend-3"]
        assert Counter(names) == {"backend-1": 2, "backend-2": 2, "backend-3": 2}

        # Reload while four clients keep sending requests.
        served = Counter[str]()
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    get_name(port)
                    served["ok"] += 1
                except (OSError, http.client.HTTPException, AssertionError) as err:
                    served[f"failed: {err!r}"] += 1

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(0.3)
            before = served["ok"]
            assert sv.ctl("signal", "HUP", "prefork_lb").strip() == "prefork_lb: signalled"
            sv.wait_for(
                "new workers",
                lambda: (
                    sv.ready_workers() >= 4
                    and len(workers := child_pids(master)) == 2
                    and not set(workers) & set(old_workers)
                ),
            )
            during = served["ok"] - before
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=20)
        assert during > 0
        assert served["ok"] > before + during
        assert [k for k in served if k != "ok"] == [], served
        assert sv.master_pid() == master
        new_workers = child_pids(master)
        names = [get_name(port) for _ in range(6)]
        assert Counter(names) == {"backend-1": 2, "backend-2": 2, "backend-3": 2}

        started = time.monotonic()
        assert sv.ctl("stop", "prefork_lb").strip() == "prefork_lb: stopped"
        took = time.monotonic() - started
        assert took < sv.stopwaitsecs
        sv.wait_for("exit status 0", lambda: "stopped: prefork_lb (exit status 0)" in sv.logs())
        assert "STOPPED" in sv.ctl("status", "prefork_lb")
        left = [p for p in process_table() if p.alive and p.group == master]
        assert left == []
        alive = {p.pid for p in process_table() if p.alive}
        assert not alive & {master, *old_workers, *new_workers}
        with pytest.raises(ConnectionRefusedError):
            get_name(port)
        # stdout is the access log, stderr the error log, each in its own file.
        assert '"GET / HTTP/1.1" 200' in sv.access_log.read_text()
        assert "Shutting down: Master" in sv.error_log.read_text()


def test_an_operators_pre_request_hook_leaves_forwarding_intact(
    start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """An operator's config that sets its own pre_request still forwards repeated headers apart."""
    config = tmp_path / "operator.conf.py"
    config.write_text(
        f"exec(open({str(ROOT / 'gunicorn.conf.py')!r}).read())\n"
        "def pre_request(worker, req):\n"
        "    worker.log.info('operator pre_request %s %s', req.method, req.path)\n"
    )
    backend = ScriptedBackend("echo")
    backend.start()
    try:
        lb = start_balancer([backend.url], workers=1, args=["-c", str(config)])
        lines = [("Host", "example.com"), ("X-Dup", "one"), ("X-Dup", "two")]
        assert send(lb.port, "GET", "/hooked", lines).status == 200
        seen = backend.wait_for_requests(1)[0]
        assert seen.header("X-Dup") == ["one", "two"]
        lb.wait_for_log(r"operator pre_request GET /hooked")
    finally:
        backend.stop()
