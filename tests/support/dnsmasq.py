"""A real dnsmasq (Debian's dnsmasq-base) on 127.0.0.1, for tests that want a real DNS server.

``Dnsmasq`` answers A/AAAA records from a hosts file it owns and SRV records
given on its command line, on an ephemeral port of 127.0.0.1 only. It reads
no configuration of the machine (no /etc/dnsmasq.conf, /etc/hosts or
/etc/resolv.conf), forwards nothing, never binds port 53, and is killed when
the test ends, however it ends (``stop()``, or a guard that kills it when
the test process dies). ``set_hosts`` rewrites the hosts
file and sends SIGHUP, which makes dnsmasq read it again; SRV records are
command-line options, so ``set_srv`` restarts it on the same port.
"""

from __future__ import annotations

import getpass
import grp
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query

from tests.support.dns_server import LoopbackDnsPeer

DNSMASQ = "/usr/sbin/dnsmasq"
# Names under this domain that the hosts file does not list are NXDOMAIN (dnsmasq's --local);
# any other name is refused: nothing is forwarded.
DOMAIN = "test"
START_SECONDS = 10.0

SrvTuple = tuple[int, int, int, str]


class _ExitedAtStart(RuntimeError):
    """dnsmasq exited before answering (its message says why: often a port in use)."""


# Runs dnsmasq, prints its pid, and kills it when the guard's standard input (a pipe from the
# test) ends: at stop(), or when the test process dies however it dies. The kernel's
# parent-death signal would not do: dnsmasq drops capabilities at start, which clears it.
# The reader reads a copy of stdin (fd 3): a background job's own stdin is /dev/null.
_GUARD = """
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
echo "$child"
{ read -r _ <&3; kill -KILL "$child" 2>/dev/null; } &
exec 3<&-
wait "$child"
"""


def free_port() -> int:
    """A port of 127.0.0.1 free for both UDP and TCP at the time of asking."""
    while True:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        ):
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Dnsmasq(LoopbackDnsPeer):
    """A dnsmasq process serving a hosts file and SRV records; see the module docstring."""

    def __init__(self, ttl: int = 1) -> None:
        self.ttl = ttl
        self.port = 0
        self._directory = tempfile.TemporaryDirectory(prefix="prefork-lb-dnsmasq-")
        self.hosts_file = Path(self._directory.name) / "hosts"
        self.hosts_file.write_text("")
        self._srv: dict[str, tuple[SrvTuple, ...]] = {}
        self._guard: subprocess.Popen[bytes] | None = None
        self.pid = 0  # dnsmasq's own, while it runs

    def set_hosts(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """The A/AAAA records, name to IPs (all others go); dnsmasq re-reads them on SIGHUP."""
        lines = [f"{ip} {name}\n" for name, ips in hosts.items() for ip in ips]
        # Written aside and renamed, so dnsmasq never reads half a file.
        staged = self.hosts_file.with_suffix(".new")
        staged.write_text("".join(lines))
        staged.replace(self.hosts_file)
        if self._guard is not None:
            os.kill(self.pid, signal.SIGHUP)

    def set_srv(self, srv: Mapping[str, Sequence[SrvTuple]]) -> None:
        """The SRV records, name to (priority, weight, port, target); restarts a running one."""
        self._srv = {name: tuple(records) for name, records in srv.items()}
        if self._guard is not None:
            self.stop()
            self.start()

    def _command(self) -> list[str]:
        command = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # not /etc/dnsmasq.conf
            "--no-resolv",  # not /etc/resolv.conf: nothing is forwarded
            "--no-hosts",  # not /etc/hosts
            "--no-poll",
            f"--addn-hosts={self.hosts_file}",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--local=/{DOMAIN}/",
            f"--local-ttl={self.ttl}",
            "--pid-file=",  # none
            # Keep the test's user and group (dnsmasq would switch to nobody and dip): it reads
            # the hosts file again on SIGHUP, from the test's temporary directory.
            f"--user={getpass.getuser()}",
            f"--group={grp.getgrgid(os.getgid()).gr_name}",
            "--log-facility=-",
        ]
        command += [
            f"--srv-host={name},{target},{port},{priority},{weight}"
            for name, records in self._srv.items()
            for priority, weight, port, target in records
        ]
        return command

    def start(self) -> Dnsmasq:
        """Start dnsmasq (on the port it had before, if any) and wait until it answers.

        A port taken between choosing and binding it is chosen again; the
        port of a restart is tried again for a few seconds (an outgoing
        socket may hold it for a moment as its ephemeral source port).
        """
        assert self._guard is None, "already started"
        fixed = bool(self.port)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if not fixed:
                self.port = free_port()
            try:
                self._start_once()
            except _ExitedAtStart:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            return self

    def _start_once(self) -> None:
        self._guard = subprocess.Popen(
            ["sh", "-c", _GUARD, "dnsmasq-guard", *self._command()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._guard.stdout is not None
        self.pid = int(self._guard.stdout.readline())
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._guard.poll() is not None:
                port = self.port
                raise _ExitedAtStart(f"dnsmasq on 127.0.0.1:{port} exited at start: {self._stop()}")
            if self._answers():
                return
        self.stop()
        raise RuntimeError(f"dnsmasq did not answer on 127.0.0.1:{self.port} in time")

    def _answers(self) -> bool:
        """Whether a question over UDP gets an answer (dnsmasq binds UDP and TCP together)."""
        query = dns.message.make_query(f"ready.{DOMAIN}", "A")
        try:
            dns.query.udp(query, "127.0.0.1", timeout=0.2, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def stop(self) -> None:
        """Kill dnsmasq and wait for it: the server is down until ``start()``."""
        self._stop()

    def _stop(self) -> str:
        """Stop it; what it wrote to its standard error."""
        if self._guard is None:
            return ""
        guard, self._guard = self._guard, None
        # The guard kills dnsmasq when its standard input ends, and exits once dnsmasq has.
        _, errors = guard.communicate(timeout=10)
        self.pid = 0
        return errors.decode(errors="replace").strip()

    def close(self) -> None:
        """Stop it and remove its hosts file."""
        self.stop()
        self._directory.cleanup()

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def dnsmasq(ttl: int = 1) -> Iterator[Dnsmasq]:
    """A started ``Dnsmasq`` with records under ``.test`` set by the test, closed afterwards."""
    server = Dnsmasq(ttl)
    try:
        yield server.start()
    finally:
        server.close()
