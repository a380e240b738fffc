"""Running one callgrind measurement: an nginx backend, and one gunicorn worker under valgrind.

Every process starts in a session of its own (its process group id is its
pid) and is registered in a ``ProcessGroups``; ``stop_all`` ends them all,
so an error or Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.bench.callgrind import parse_total_instructions, worker_pid
from scripts.bench.instructions import Run

# One worker process, no access log: the backend should cost the same in every run.
NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 3600s;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
"""
BODY = b"ok"
STARTUP_TIMEOUT_S = 600.0  # gunicorn and gevent start slowly under valgrind, slower in parallel


class ProcessGroups:
    """The process groups started so far, to be stopped together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[subprocess.Popen[bytes]] = []
        self._stopping = False

    def start(
        self, command: list[str], cwd: Path, env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new session, its output to ``log``; refused once stopping."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("stopping: no new processes")
            with log.open("wb") as output:
                process = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float) -> None:
        """SIGTERM to the leader (gunicorn stops its worker itself), SIGKILL to the group after."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        with self._lock:
            if process in self._running:
                self._running.remove(process)

    def stop_all(self) -> None:
        """Stop every group still running, newest first, without waiting long for any."""
        with self._lock:
            self._stopping = True
            running = list(reversed(self._running))
        for process in running:
            self.stop(process, grace_s=2.0)


@dataclass(frozen=True, slots=True)
class Checkout:
    """A revision to measure: its label and the work tree with its own .venv."""

    label: str
    path: Path


def free_port() -> int:
    """A port the kernel considers free now (an ephemeral one: always five digits)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port: int = listener.getsockname()[1]
    return port


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return once ``port`` accepts connections; RuntimeError if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"port {port} not listening after {timeout_s:g} s")


def _get(connection: http.client.HTTPConnection) -> tuple[int, bytes]:
    """One GET / on a keep-alive connection: status and body."""
    connection.request("GET", "/", headers={"Host": "bench.test", "User-Agent": "compare"})
    response = connection.getresponse()
    return response.status, response.read()


def start_nginx(
    groups: ProcessGroups, nginx: str, directory: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """The backend: nginx answering ``200 ok``, checked to do so; the process and its port."""
    directory.mkdir(parents=True)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    command = [nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    process = groups.start(command, directory, dict(os.environ), directory / "output.log")
    wait_listening(port, process, 20)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answer = _get(connection)
    finally:
        connection.close()
    if answer != (200, BODY):
        raise RuntimeError(f"the nginx backend answered {answer}, not (200, {BODY!r})")
    return process, port


def _environment(backend_port: int) -> dict[str, str]:
    """This environment without PREFORK_LB_* settings, but for the backend; hashes fixed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_LB_")}
    env["PREFORK_LB_BACKENDS"] = f"http://127.0.0.1:{backend_port}"
    env["PYTHONHASHSEED"] = "0"  # the same str hashes, dict layouts, in every run
    return env


def _wait_for_worker(error_log: Path, master: subprocess.Popen[bytes]) -> int:
    """The worker's pid, once gunicorn's log names it."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {master.returncode}")
        if error_log.exists():
            pid = worker_pid(error_log.read_text(errors="replace"))
            if pid is not None:
                return pid
        time.sleep(0.3)
    raise RuntimeError(f"no worker after {STARTUP_TIMEOUT_S:g} s")


def measure(
    groups: ProcessGroups,
    checkout: Checkout,
    *,
    rep: int,
    requests: int,
    backend_port: int,
    out: Path,
) -> Run:
    """Send ``requests`` GETs on one connection through a 1-worker gunicorn under callgrind.

    The master is stopped with SIGTERM, so the worker exits cleanly and
    callgrind writes its totals. RuntimeError if any answer or log line is wrong.
    """
    out.mkdir(parents=True)
    port = free_port()
    venv = checkout.path / ".venv" / "bin"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        f"--log-file={out}/valgrind.%p.log",
        str(venv / "python"),
        str(venv / "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "900",
        # gunicorn-h1c's parser uses an SSE4.2 string instruction (PCMPESTRI)
        # that valgrind cannot run (SIGILL): every revision is measured with
        # gunicorn's Python parser. The C parser's gain shows in loadtest.sh.
        "--http-parser",
        "python",
        "--graceful-timeout",
        "120",
        # An access log to a file for every revision (each in its own format).
        "--access-logfile",
        str(out / "access.log"),
        "--error-logfile",
        str(out / "error.log"),
    ]
    (out / "command.txt").write_text(f"cd {checkout.path} && {' '.join(command)}\n")
    master = groups.start(command, checkout.path, _environment(backend_port), out / "output.log")
    try:
        pid = _wait_for_worker(out / "error.log", master)
        wait_listening(port, master, STARTUP_TIMEOUT_S)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT_S)
        try:
            answers = [_get(connection) for _ in range(requests)]
        finally:
            connection.close()
        time.sleep(1.0)  # the worker sees the close before the master's SIGTERM
    finally:
        groups.stop(master, grace_s=300.0)  # a clean exit under valgrind takes a while
    wrong = [answer for answer in answers if answer != (200, BODY)]
    if wrong:
        raise RuntimeError(f"{out}: {len(wrong)} of {requests} answers were not 200 ok: {wrong[0]}")
    logged = (out / "access.log").read_text(errors="replace").splitlines()
    if len(logged) != requests:
        raise RuntimeError(f"{out}: {len(logged)} access log lines for {requests} requests")
    counted = parse_total_instructions((out / f"callgrind.out.{pid}").read_text(errors="replace"))
    return Run(label=checkout.label, rep=rep, requests=requests, instructions=counted)
