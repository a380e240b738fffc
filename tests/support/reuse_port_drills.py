"""Several prefork_lb instances on one port (SO_REUSEPORT), as scripts/deploy sets them up.

``restart_drill``: two instances started as scripts/deploy/reuse-port.env.example starts
them (its GUNICORN_CMD_ARGS, bound to 127.0.0.1), clients sending requests on fresh
connections all along, and one instance stopped with TERM and started again, then
reloaded with HUP.

``queue_drill``: the kernel alone: connections queued (never accepted) on two listeners
of one SO_REUSEPORT group, then one listener closed; how many the other can still accept.

Both bind on the loopback of the network namespace they run in (tests/support/deploy_drills.py).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.backend import ScriptedBackend
from tests.support.balancer import ROOT, child_pids, clean_environ, gunicorn_command
from tests.support.namespace import listening_sockets
from tests.support.polling import wait_for

ENV_EXAMPLE = ROOT / "scripts" / "deploy" / "reuse-port.env.example"


def instance_flags(port: int) -> list[str]:
    """GUNICORN_CMD_ARGS of the shipped env example, with its address moved to 127.0.0.1."""
    match = re.search(r'^GUNICORN_CMD_ARGS="(.*)"$', ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert match is not None, f"no GUNICORN_CMD_ARGS in {ENV_EXAMPLE}"
    flags = shlex.split(match[1])
    flags[flags.index("--bind") + 1] = f"127.0.0.1:{port}"
    return flags


class Instance:
    """One gunicorn master started as a systemd instance would be, its log in a file."""

    def __init__(self, name: str, port: int, backends: list[str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        flags = instance_flags(port)
        self.workers = int(flags[flags.index("--workers") + 1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*gunicorn_command(), "--graceful-timeout=5"],
                cwd=ROOT,
                env=clean_environ(
                    {
                        "GUNICORN_CMD_ARGS": shlex.join(flags),
                        "PREFORK_LB_BACKENDS": ",".join(backends),
                    }
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        """What the master and its workers logged."""
        return self.log_path.read_text(errors="replace")

    def served(self) -> int:
        """Requests this instance answered with 200 (its access log lines)."""
        return len(re.findall(r'"GET / HTTP/1\.1" 200 ', self.log()))

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the master, wait for it (killing it past ``timeout``); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class ClientLoop:
    """Threads that each send GET / on a fresh connection, again and again, until stopped."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.results = Counter[str]()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                self.results[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as err:
                self.results[repr(err)] += 1
            finally:
                conn.close()

    def ok(self) -> int:
        """Requests answered 200 so far."""
        return self.results["200"]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def restart_drill(clients: int) -> dict[str, Any]:
    """Two instances on one port; one restarted under load. What each served, what failed."""
    backends = [ScriptedBackend(f"backend-{i}") for i in (1, 2)]
    for backend in backends:
        backend.start()
    # Holding the port, bound with SO_REUSEPORT but not listening, keeps it ours.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    port: int = holder.getsockname()[1]
    urls = [backend.url for backend in backends]
    instances: list[Instance] = []
    with tempfile.TemporaryDirectory(prefix="prefork_lb-reuse-") as home:
        logs = Path(home)
        try:
            first, second = Instance("a", port, urls, logs), Instance("b", port, urls, logs)
            instances += [first, second]
            all_bound = first.workers + second.workers
            wait_for(
                lambda: listening_sockets(port) == all_bound,
                "every worker listening",
                20,
                context=lambda: first.log() + second.log(),
            )
            with ClientLoop(port, clients) as loop:
                wait_for(lambda: first.served() > 0 and second.served() > 0, "both serving", 20)
                before_stop = loop.ok()
                stopped_with = first.stop()
                during_stop = loop.ok() - before_stop
                wait_for(lambda: listening_sockets(port) == second.workers, "a's sockets gone", 5)
                again = Instance("a-again", port, urls, logs)
                instances.append(again)
                wait_for(lambda: again.served() > 0, "a serving again", 20, context=again.log)
                wait_for(lambda: listening_sockets(port) == all_bound, "a listening again", 5)
                after_restart = loop.ok()
                wait_for(lambda: loop.ok() > after_restart + 100, "requests after restart", 20)
                # A reload of one instance: its new workers bind, its old ones close theirs.
                old_workers = set(child_pids(again.process.pid))
                again.process.send_signal(signal.SIGHUP)
                wait_for(
                    lambda: (
                        not old_workers & set(child_pids(again.process.pid))
                        and listening_sockets(port) == all_bound
                    ),
                    "a reloaded",
                    20,
                    context=again.log,
                )
                after_reload = loop.ok()
                wait_for(lambda: loop.ok() > after_reload + 100, "requests after reload", 20)
            return {
                "port": port,
                "exit_status": stopped_with,
                "served": {i.name: i.served() for i in instances},
                "during_stop": during_stop,
                "results": dict(loop.results),
            }
        finally:
            for instance in instances:
                instance.stop(signal.SIGQUIT, timeout=5)
            holder.close()
            for backend in backends:
                backend.stop()


def queue_drill(connections: int) -> dict[str, Any]:
    """Connections queued on two SO_REUSEPORT listeners; one closed; how many are still served."""
    listeners: list[socket.socket] = []
    for _ in range(2):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", listeners[0].getsockname()[1] if listeners else 0))
        listener.listen(connections)
        listeners.append(listener)
    clients = [
        socket.create_connection(listeners[0].getsockname(), timeout=5) for _ in range(connections)
    ]
    try:
        for client in clients:
            client.sendall(b"x")
        listeners[0].close()  # its queued connections: reset, or moved to listeners[1]
        listeners[1].settimeout(0.5)
        accepted: list[socket.socket] = []
        with contextlib.suppress(TimeoutError):
            while len(accepted) < connections:
                accepted.append(listeners[1].accept()[0])
        alive = sum(1 for conn in accepted if conn.recv(1) == b"x")
        for conn in accepted:
            conn.close()
        return {"connections": connections, "accepted": len(accepted), "alive": alive}
    finally:
        for client in clients:
            client.close()
        listeners[1].close()
