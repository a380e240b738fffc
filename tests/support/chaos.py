"""Killing balancer workers under load, and knowing exactly which client connections each held.

A worker's client connections are the sockets in ``/proc/PID/fd`` whose inodes the
kernel's TCP table (what /proc/net/tcp shows, asked through sock_diag) lists with the
balancer's port as the local end; the remote end is the client's port. To make the
snapshot exact, the worker is first frozen with SIGSTOP (so it can accept no new
connection between the snapshot and the kill), then read, then SIGKILLed.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.balancer import child_pids as process_table_children


def child_pids(parent: int) -> list[int]:
    """Live children of ``parent``, from ``/proc/PARENT/task/*/children``.

    That file is cheap to read; kernels built without it get the whole process table.
    """
    tasks = list(Path(f"/proc/{parent}/task").glob("*/children"))
    if not tasks:
        return process_table_children(parent)
    children: set[int] = set()
    for task in tasks:
        with contextlib.suppress(OSError):
            children.update(int(pid) for pid in task.read_text().split())
    return sorted(pid for pid in children if _state(pid) not in ("Z", "X", None))


def _state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


# sock_diag (netlink), the interface ``ss`` uses: see linux/inet_diag.h and sock_diag(7).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HEADER = struct.Struct("=IHHII")
# family, protocol, ext, pad, states; then inet_diag_sockid: sport, dport (big-endian),
# src[4], dst[4], interface, cookie[2].
_DIAG_REQUEST = struct.Struct("=BBBBI")
_SOCKID_LENGTH = 48
# inet_diag_msg: family, state, timer, retrans; sockid; expires, rqueue, wqueue, uid, inode.
_DIAG_MESSAGE = struct.Struct("=BBBB2s2s44xIIIII")
_TCP_TIME_WAIT, _TCP_LISTEN = 6, 10
# Every TCP state but TIME_WAIT and LISTEN: neither is a connection a process holds.
_HELD_STATES = sum(
    1 << state for state in range(1, 13) if state not in (_TCP_TIME_WAIT, _TCP_LISTEN)
)


def _tcp_connections(family: int) -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every TCP connection of ``family`` on the host.

    Asked of the kernel through sock_diag with the states filtered there, not read from
    /proc/net/tcp: under load that table holds tens of thousands of TIME_WAIT rows and
    is handed out 4 KiB per read, which took 0.5 to 3 s here (measured), while a worker
    stays frozen and every connection it holds waits.
    """
    request = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _HELD_STATES)
    request += bytes(_SOCKID_LENGTH)
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
    )
    found: list[tuple[int, int, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.sendall(header + request)
        while True:
            data = sock.recv(1 << 20)
            offset = 0
            while offset < len(data):
                length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
                    raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
                fields = _DIAG_MESSAGE.unpack_from(data, offset + _NLMSG_HEADER.size)
                local, remote, inode = fields[4], fields[5], fields[10]
                found.append((int.from_bytes(local, "big"), int.from_bytes(remote, "big"), inode))
                offset += (length + 3) & ~3


def client_ports_held(pid: int, server_port: int) -> set[int]:
    """The client ports of the connections to ``server_port`` that process ``pid`` holds.

    A socket in ``/proc/PID/fd`` is matched by its inode to the kernel's TCP table.
    Every state but LISTEN and TIME_WAIT counts: a connection the client has half-closed
    is still one whose request the worker holds.
    """
    inodes = socket_inodes(pid)
    return {
        remote
        for family in (socket.AF_INET, socket.AF_INET6)
        for local, remote, inode in _tcp_connections(family)
        if local == server_port and inode in inodes
    }


def _wait_stopped(pid: int, timeout: float) -> bool:
    """Wait until every thread of ``pid`` is stopped (or gone); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = set()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    states.add((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states <= {"T", "t", "Z", "X"}:
            return True
        time.sleep(0.001)
    return False


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: when, whom, and the client ports the victim held at that instant."""

    at: float
    pid: int
    held: frozenset[int]


def kill_and_record(pid: int, server_port: int, stop_timeout: float = 2.0) -> Kill | None:
    """Freeze ``pid``, note the client connections it holds, SIGKILL it; None if it was gone.

    ``at`` is read while the victim is frozen, so it lies inside the lifetime of every
    connection in ``held``.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    try:
        if not _wait_stopped(pid, stop_timeout):
            raise AssertionError(f"worker {pid} did not stop within {stop_timeout} s")
        at = time.monotonic()
        held = frozenset(client_ports_held(pid, server_port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return Kill(at, pid, held)


@dataclass(frozen=True)
class Outcome:
    """One client request: its client port, when it began and ended, and what came back."""

    port: int  # 0 if the connection was never made
    started: float
    ended: float
    answer: str  # the answering backend's name, or "failed: ..." with the reason

    @property
    def ok(self) -> bool:
        """Whether the request got a whole 200 answer."""
        return not self.answer.startswith("failed: ")


def request_once(server_port: int, target: str = "/", timeout: float = 10.0) -> Outcome:
    """GET ``target`` on a new connection with ``Connection: close``; never raises."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=timeout)
    client_port = 0
    try:
        conn.connect()
        assert conn.sock is not None
        client_port = conn.sock.getsockname()[1]
        conn.request("GET", target, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode("latin-1").strip()
        answer = body if response.status == 200 else f"failed: {response.status} {body}"
    except (OSError, http.client.HTTPException) as err:
        answer = f"failed: {err!r}"
    finally:
        conn.close()
    return Outcome(client_port, started, time.monotonic(), answer)


class Load:
    """``clients`` threads, each sending one request after another until ``stop()``."""

    def __init__(self, server_port: int, clients: int, target: str = "/") -> None:
        """Prepare the threads; ``start()`` sets them going."""
        self._port = server_port
        self._target = target
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(clients)
        ]

    def _run(self) -> None:
        while not self._stopping.is_set():
            outcome = request_once(self._port, self._target)
            with self._lock:
                self._outcomes.append(outcome)

    @property
    def outcomes(self) -> list[Outcome]:
        """Every finished request so far, in the order they ended."""
        with self._lock:
            return list(self._outcomes)

    def start(self) -> Load:
        """Start every client thread."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> list[Outcome]:
        """Let each client finish its request, then return every outcome."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"clients still running after {timeout} s: {alive}"
        return self.outcomes

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(20.0)
