"""The running cluster: its namespaces and servers, and what the phases do to them.

``Cluster`` is used as a context manager: leaving it (normally, by an error,
or by a signal turned into an exception) stops every server and deletes every
namespace it made.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from scripts.bench.cluster import haproxy_api, netns
from scripts.bench.cluster.analysis import Request
from scripts.bench.cluster.configs import (
    HASH_HEADER,
    READY_PATH,
    Checks,
    haproxy_config,
    instance_arguments,
    instance_environment,
    nginx_config,
)
from scripts.bench.cluster.plan import BACKEND_PORT, FRONT_PORT, INSTANCE_PORT, Host, Layout
from scripts.bench.cluster.services import Service, start_in, wait_until, workers_of
from scripts.bench.wrk import DONE_SCRIPT, WrkResult, parse_wrk_output, why_no_result

ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT_S = 30.0
HAPROXY_BACKEND = "instances"
_WORKER_READY = re.compile(r"prefork_lb: worker \d+ ready")


@dataclass(frozen=True, slots=True)
class Answer:
    """One response the orchestrator got: status, the headers the backends add."""

    status: int
    backend: str
    peer: str


class Cluster:
    """Namespaces, 3 backends, 3 prefork_lb instances, HAProxy; started by ``__enter__``."""

    def __init__(
        self,
        layout: Layout,
        work_dir: Path,
        *,
        checks: Checks,
        workers: int,
        nginx: str | None,
        haproxy: str,
    ) -> None:
        self.layout = layout
        self.work_dir = work_dir
        self.checks = checks
        self.workers = workers
        self.nginx = nginx
        self.haproxy = haproxy
        self.services: dict[str, Service] = {}
        self.stats_socket = work_dir / "haproxy.sock"
        self._built = False

    # ---- start and stop ----------------------------------------------------------------

    def __enter__(self) -> Cluster:
        # __exit__ is not called when __enter__ fails: take down what was made here.
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._built = True  # whatever part of it exists is removed on close
        netns.build(self.layout)
        for host in self.layout.of_role("backend"):
            self._start_backend(host)
        for host in self.layout.of_role("instance"):
            self.start_instance(host)
        for host in self.layout.of_role("backend"):
            self.wait_answers(host, BACKEND_PORT, "/")
        for host in self.layout.of_role("instance"):
            self.wait_instance_ready(host)
        self._start_haproxy()
        for host in self.layout.of_role("instance"):
            self.wait_haproxy_status(host, "UP")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every server (newest first), then delete every namespace of the run."""
        for service in reversed(list(self.services.values())):
            service.stop()
        self.services.clear()
        if self._built:
            netns.remove(self.layout.namespaces())

    def _start_backend(self, host: Host) -> None:
        namespace = host.namespace(self.layout.prefix)
        log = self.work_dir / f"{host.short}.log"
        if self.nginx:
            config = self.work_dir / f"nginx-{host.short}.conf"
            config.write_text(nginx_config(host, self.work_dir, os.geteuid() == 0))
            command = [self.nginx, "-e", "stderr", "-p", str(self.work_dir), "-c", str(config)]
        else:
            command = [sys.executable, "-m", "scripts.bench", "backend", str(BACKEND_PORT),
                       host.short, os.devnull, "--host", host.address]  # fmt: skip
        self.services[host.short] = start_in(namespace, host.short, command, log, cwd=ROOT)

    def start_instance(self, host: Host) -> Service:
        """Start (or start again) prefork_lb on ``host``: gunicorn with PROXY protocol."""
        gunicorn = Path(sys.executable).parent / "gunicorn"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_LB_")}
        env.update(instance_environment(self.layout.of_role("backend")))
        arguments = instance_arguments(host, self.layout.front, self.workers)
        old = self.services.get(host.short)
        service = start_in(
            host.namespace(self.layout.prefix),
            host.short,
            [str(gunicorn), "-c", str(ROOT / "gunicorn.conf.py"), *arguments],
            self.work_dir / f"{host.short}.log",
            env=env,
            cwd=ROOT,
        )
        if old is not None:
            service.history = [*old.history, old.pid]
        self.services[host.short] = service
        return service

    def _start_haproxy(self) -> None:
        config = self.work_dir / "haproxy.cfg"
        config.write_text(
            haproxy_config(
                self.layout.front, self.layout.of_role("instance"), self.checks, self.stats_socket
            )
        )
        front = self.layout.front
        self.services["ha"] = start_in(
            front.namespace(self.layout.prefix),
            "ha",
            [self.haproxy, "-db", "-f", str(config)],
            self.work_dir / "haproxy.log",
        )
        wait_until(self.stats_socket.exists, "HAProxy's stats socket", READY_TIMEOUT_S)

    # ---- looking at it -----------------------------------------------------------------

    def get(
        self, address: str, port: int, path: str, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request from the client's namespace, on a connection of its own."""
        sock = netns.connect_in(
            self.layout.client.namespace(self.layout.prefix), (address, port), 5
        )
        conn = http.client.HTTPConnection(address, port, timeout=5)
        conn.sock = sock
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return Answer(
                response.status,
                response.getheader("X-Backend", ""),
                response.getheader("X-Backend-Peer", ""),
            )
        finally:
            conn.close()

    def _answers(self, address: str, port: int, path: str) -> bool:
        try:
            return self.get(address, port, path).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def wait_answers(self, host: Host, port: int, path: str) -> None:
        """Wait until ``host`` answers 200 on ``port``; fail with its log if it exited."""
        service = self.services[host.short]

        def answers() -> bool:
            if not service.running():
                raise RuntimeError(f"{host.short} exited:\n{service.log_text()[-2000:]}")
            return self._answers(host.address, port, path)

        wait_until(answers, f"{host.short} answering on port {port}", READY_TIMEOUT_S, 0.1)

    def booted(self, host: Host) -> int:
        """How many workers ``host``'s instance has booted so far (its log says each)."""
        return len(_WORKER_READY.findall(self.services[host.short].log_text()))

    def wait_instance_ready(
        self, host: Host, booted_before: int = 0, replacing: AbstractSet[int] = frozenset()
    ) -> float:
        """Wait until ``workers`` new workers have booted (the ``replacing`` ones gone), and
        the instance says it is ready; the seconds it took."""
        service = self.services[host.short]

        def booted() -> bool:
            if not service.running():
                raise RuntimeError(f"{host.short} exited:\n{service.log_text()[-2000:]}")
            workers = workers_of(service.pid)
            return (
                self.booted(host) >= booted_before + self.workers
                and len(workers) == self.workers
                and not workers & replacing
            )

        took = wait_until(booted, f"{host.short}'s workers booted", READY_TIMEOUT_S)
        started = time.monotonic()
        self.wait_answers(host, INSTANCE_PORT, READY_PATH)
        return took + time.monotonic() - started

    def haproxy_status(self) -> dict[str, dict[str, str]]:
        """HAProxy's row for each instance (status, stot, econ, wredis...)."""
        return haproxy_api.server_rows(self.stats_socket, HAPROXY_BACKEND)

    def wait_haproxy_status(
        self, host: Host, status: str, timeout_s: float = READY_TIMEOUT_S
    ) -> float:
        """Seconds until HAProxy's status for ``host`` starts with ``status`` (UP, DOWN)."""

        def reached() -> bool:
            return self.haproxy_status()[host.short]["status"].startswith(status)

        return wait_until(reached, f"HAProxy marking {host.short} {status}", timeout_s, 0.02)

    def set_in_service(self, count: int) -> None:
        """The first ``count`` instances ready in HAProxy, the others in maintenance."""
        for number, host in enumerate(self.layout.of_role("instance"), 1):
            state = "ready" if number <= count else "maint"
            haproxy_api.set_state(self.stats_socket, HAPROXY_BACKEND, host.short, state)
        for number, host in enumerate(self.layout.of_role("instance"), 1):
            if number <= count:
                self.wait_haproxy_status(host, "UP")

    def backend_for_key(self, address: str, port: int, key: str) -> Answer:
        """The answer to a request carrying the hash key ``key``."""
        return self.get(address, port, "/", {HASH_HEADER: key})

    # ---- load --------------------------------------------------------------------------

    def run_wrk(self, wrk: str, connections: int, seconds: float, name: str) -> WrkResult:
        """wrk from the client's namespace at HAProxy for ``seconds``; its figures."""
        command = [
            "ip", "netns", "exec", self.layout.client.namespace(self.layout.prefix),
            wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "2s",
            "-s", str(DONE_SCRIPT), f"http://{self.layout.front.address}:{FRONT_PORT}/",
        ]  # fmt: skip
        output = self.work_dir / f"wrk-{name}.txt"
        with output.open("w") as out:
            subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 30, check=False
            )
        text = output.read_text(errors="replace")
        result = parse_wrk_output(text)
        if result is None:
            raise RuntimeError(why_no_result(text))
        return result

    def start_load(self, connections: int, max_seconds: float, name: str) -> Load:
        """Start the driver in the client's namespace, aimed at HAProxy."""
        save_as = self.work_dir / f"load-{name}.json"
        command = [sys.executable, "-m", "scripts.bench.cluster.driver", self.layout.front.address,
                   str(FRONT_PORT), str(connections), str(max_seconds), str(save_as)]  # fmt: skip
        service = start_in(
            self.layout.client.namespace(self.layout.prefix),
            f"load-{name}",
            command,
            self.work_dir / f"load-{name}.log",
            cwd=ROOT,
        )
        self.services[service.name] = service
        return Load(self, service, save_as, max_seconds)


class Load:
    """A running driver; ``finish`` stops it and returns its records."""

    def __init__(
        self, cluster: Cluster, service: Service, save_as: Path, max_seconds: float
    ) -> None:
        self._cluster = cluster
        self._service = service
        self._save_as = save_as
        self._max_seconds = max_seconds

    def finish(self) -> list[Request]:
        """Stop the load (TERM: each connection finishes its request); every request it made."""
        self._service.process.send_signal(signal.SIGTERM)
        try:
            self._service.process.wait(self._max_seconds + 15)
        except subprocess.TimeoutExpired:
            self._service.kill_group()
        self._cluster.services.pop(self._service.name, None)
        if not self._save_as.exists():
            raise RuntimeError(
                f"the load driver saved nothing:\n{self._service.log_text()[-2000:]}"
            )
        document = json.loads(self._save_as.read_text())
        return [Request.from_record(record) for record in document["records"]]


def keep_logs(work_dir: Path, keep_as: Path) -> None:
    """Move the run's logs and configuration to ``keep_as`` (the last run's only)."""
    shutil.rmtree(keep_as, ignore_errors=True)
    keep_as.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(work_dir, keep_as, ignore=shutil.ignore_patterns("*.sock", "nginx-temp-*"))
    shutil.rmtree(work_dir, ignore_errors=True)
