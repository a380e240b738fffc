"""A real HAProxy in TCP mode in front of balancers: ``haproxy -f CFG -db`` in a child process.

The test binds the front's listening socket itself (127.0.0.1, ephemeral port)
and HAProxy takes it over as ``bind fd@N``: the port is known before HAProxy
starts and nothing races for it. Each server line sends the PROXY protocol
(``v1``: ``send-proxy``, ``v2``: ``send-proxy-v2``, ``""``: none) and, with a
``check_path``, is checked with ``option httpchk GET <check_path>`` every
``check_interval`` seconds (one failure marks it down, one success up). The
server states come from HAProxy's stats socket (``show stat``). The process is
killed when the ``with`` block ends however it ends, and with the test process
if that dies first.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
_PROXY_OPTION = {"v1": "send-proxy", "v2": "send-proxy-v2", "": ""}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child, before exec: the kernel sends SIGKILL when the test process dies.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class HAProxy:
    """One HAProxy process: a TCP front on 127.0.0.1, one server line per instance port."""

    def __init__(
        self,
        servers: Sequence[int],
        *,
        proxy: str = "v2",
        check_path: str | None = "/_prefork_lb/ready",
        check_interval: float = 0.2,
        server_options: str = "",
    ) -> None:
        if proxy not in _PROXY_OPTION:
            raise ValueError(f"proxy must be 'v1', 'v2' or '', got {proxy!r}")
        self._dir = tempfile.TemporaryDirectory(prefix="haproxy-")
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._listener.set_inheritable(True)
        self.port: int = self._listener.getsockname()[1]
        self.stats_socket = Path(self._dir.name) / "stats.sock"
        self.config = Path(self._dir.name) / "haproxy.cfg"
        self.config.write_text(
            _config(
                self._listener.fileno(),
                self.stats_socket,
                servers,
                _PROXY_OPTION[proxy],
                check_path,
                check_interval,
                server_options,
            )
        )
        self._log = Path(self._dir.name) / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        """Start HAProxy and wait until its stats socket answers."""
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-f", str(self.config), "-db"],
                pass_fds=[self._listener.fileno()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"haproxy exited {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                self.command("show info")
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy not up after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        """What HAProxy wrote (its alerts and warnings)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def command(self, line: str) -> str:
        """One command on the stats socket, and its whole answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Each server line's status as HAProxy sees it now: "UP", "DOWN", ... by name."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for_states(self, state: str, timeout: float = 10.0) -> dict[str, str]:
        """Wait until every server is in ``state``; fail with the states and the log if not."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(s.split()[0] == state for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy servers {states}, not all {state}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill HAProxy (it keeps no state worth a graceful stop) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._listener.close()
        self._dir.cleanup()

    def __enter__(self) -> HAProxy:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(  # noqa: PLR0917 - one config, written in one place
    fd: int,
    stats_socket: Path,
    servers: Sequence[int],
    proxy_option: str,
    check_path: str | None,
    check_interval: float,
    server_options: str,
) -> str:
    check = f"check inter {round(check_interval * 1000)} fall 1 rise 1" if check_path else ""
    lines = [
        "global",
        f"  stats socket {stats_socket} mode 600 level admin",
        "defaults",
        "  mode tcp",
        "  timeout connect 2s",
        "  timeout client 30s",
        "  timeout server 30s",
        "frontend front",
        f"  bind fd@{fd}",
        "  default_backend instances",
        "backend instances",
    ]
    if check_path:
        lines.append(f"  option httpchk GET {check_path}")
    lines += [
        f"  server instance-{i} 127.0.0.1:{port} {proxy_option} {check} {server_options}".rstrip()
        for i, port in enumerate(servers)
    ]
    return "\n".join(lines) + "\n"
