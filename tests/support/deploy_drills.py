"""Drills of the files in scripts/deploy, each in a network namespace of its own.

Run as ``unshare --net -- python -m tests.support.deploy_drills COMMAND [--sysctl FILE]``
(root): it brings the namespace's loopback up and applies the sysctl file there, so
the host's settings are neither read nor changed, and its ports (8000, 0.0.0.0) are
its own. It prints one JSON object.

``restart``: two instances started as scripts/deploy/reuse-port.env.example starts
them (its GUNICORN_CMD_ARGS, bound to 127.0.0.1), clients sending requests on fresh
connections all along, and one instance stopped with TERM and started again.

``queue``: the kernel alone: connections queued (never accepted) on two listeners of
one SO_REUSEPORT group, then one listener closed; how many the other can still accept.

``image``: the Containerfile's last stage replayed without a container engine, on the
installed project: its COPY of the config into a working directory of its own, its
ENV, its CMD; then its HEALTHCHECK command, with the backend up and down. Not its USER:
the interpreter of the tests' virtualenv may live where only root reads (pyenv under
/root), so the drill runs as root, with a HOME that does not exist.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.backend import ScriptedBackend
from tests.support.balancer import ROOT, child_pids, clean_environ, gunicorn_command
from tests.support.containerfile import (
    copied_from_context,
    environment,
    exec_form,
    final_stage,
    healthcheck_command,
)
from tests.support.polling import wait_for

ENV_EXAMPLE = ROOT / "scripts" / "deploy" / "reuse-port.env.example"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def apply_sysctl_file(path: Path) -> dict[str, str]:
    """Write each ``key = value`` of a sysctl.d file under /proc/sys; return what was set."""
    applied = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        Path("/proc/sys", *key.split(".")).write_text(value + "\n")
        applied[key] = value
    return applied


def _listeners() -> list[tuple[str, int]]:
    """(address in /proc's hex, port) of every listening IPv4 TCP socket in this namespace."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == _LISTEN:
            address, port = fields[1].rsplit(":", 1)
            found.append((address, int(port, 16)))
    return found


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` in this network namespace."""
    return sum(1 for _, bound in _listeners() if bound == port)


def _listens_on_any_address(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:``port``, as a container's port must."""
    return ("00000000", port) in _listeners()


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
    listeners = []
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
        accepted = []
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


def image_drill() -> dict[str, Any]:
    """The image's CMD from its WORKDIR with its ENV, and its HEALTHCHECK, backend up and down."""
    stage = final_stage()
    (cmd,) = [exec_form(args) for keyword, args in stage if keyword == "CMD"]
    probe = healthcheck_command(stage)
    backend = ScriptedBackend("backend-1")
    backend.start()
    bin_dir = str(Path(sys.executable).parent)  # the image has them in /usr/local/bin
    with tempfile.TemporaryDirectory(prefix="prefork_lb-image-") as workdir:
        for sources, destination in copied_from_context(stage):
            for source in sources:
                (Path(workdir) / destination / Path(source).name).write_bytes(
                    (ROOT / source).read_bytes()
                )
        env = clean_environ({})
        env = {
            **{k: v for k, v in env.items() if k in ("LANG", "LC_ALL", "TZ", "PYTHONPATH")},
            **environment(stage),
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "PREFORK_LB_BACKENDS": backend.url,
        }
        port = int(env["PORT"])
        log_path = Path(workdir) / "gunicorn.log"
        with log_path.open("wb") as log:
            master = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

        def health() -> int:
            return subprocess.run(
                probe, cwd=workdir, env=env, capture_output=True, timeout=30, check=False
            ).returncode

        def answered() -> bool:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                response = conn.getresponse()
                return response.status == 200 and response.read().strip() == b"backend-1"
            return False

        def log_text() -> str:
            return log_path.read_text(errors="replace")[-3000:]

        try:
            wait_for(answered, "the image's gunicorn answering", 20, context=log_text)
            up = health()
            backend.stop()
            answered()  # a failed request marks the backend down (max_fails)
            down = health()
            probed = [r.target for r in backend.requests if r.target != "/"]
            workers = len(child_pids(master.pid))
            listening = _listens_on_any_address(port)
            master.send_signal(signal.SIGTERM)
            exit_status = master.wait(timeout=15)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait()
            backend.stop()
        return {
            "listening_on_any_address": listening,
            "healthy_with_backend": up,
            "healthy_without_backend": down,
            "forwarded_probes": probed,
            "workers": workers,
            "home_made": Path(env["HOME"]).exists(),
            "exit_status": exit_status,
            "log": log_text(),
        }


def run_drill(command: str, *options: str, timeout: float = 90.0) -> dict[str, Any]:
    """For a test: run one drill in a new network namespace and return its report."""
    process = subprocess.Popen(
        ["unshare", "--net", "--", sys.executable, "-m", __name__, command, *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group: on a timeout the drill's gunicorns go with it.
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"drill {command} did not end in {timeout} s:\n{err}") from None
    assert process.returncode == 0, f"drill {command} failed ({process.returncode}):\n{err}"
    report: dict[str, Any] = json.loads(out)
    return report


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
