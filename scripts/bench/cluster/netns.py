"""Network namespaces, the bridge and the veths between them, with iproute2 (``ip``).

Everything is made inside namespaces the run creates: deleting them removes
every interface and address, and killing the processes found in them
(``ip netns pids``) removes what ran there. A socket is made inside a
namespace by a short-lived thread that enters it (``setns`` changes the
network namespace of the calling thread only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from scripts.bench.cluster.plan import SUBNET_BITS, Layout, run_of, stale_namespaces

IP_TIMEOUT_S = 10
_CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class NetworkError(Exception):
    """An ``ip`` command failed: its command line and what it said."""


def ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip ARGS`` (inside ``namespace`` with ``-n``); its output, or NetworkError."""
    command = ["ip", *(("-n", namespace) if namespace else ()), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise NetworkError(f"{' '.join(command)}: no answer within {IP_TIMEOUT_S} s") from err
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def build(layout: Layout) -> None:
    """Make the run's namespaces, the bridge, one veth per host, their addresses."""
    switch = layout.switch_namespace
    ip("netns", "add", switch)
    ip("link", "add", layout.bridge, "type", "bridge", namespace=switch)
    ip("link", "set", layout.bridge, "up", namespace=switch)
    for host in layout.hosts:
        namespace = host.namespace(layout.prefix)
        inside, port = layout.host_interface(host), layout.switch_interface(host)
        ip("netns", "add", namespace)
        # Both ends are made where they belong: nothing appears in the host's namespace.
        ip("link", "add", inside, "netns", namespace, "type", "veth",
           "peer", "name", port, "netns", switch)  # fmt: skip
        ip("link", "set", port, "master", layout.bridge, "up", namespace=switch)
        ip("addr", "add", f"{host.address}/{SUBNET_BITS}", "dev", inside, namespace=namespace)
        ip("link", "set", inside, "up", namespace=namespace)
        # A new namespace's loopback is down.
        ip("link", "set", "lo", "up", namespace=namespace)


def run_namespaces() -> list[str]:
    """The names of every network namespace (``ip netns list``)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def pids_in(namespace: str) -> list[int]:
    """The processes running in ``namespace`` (none if it is already gone)."""
    try:
        return [int(pid) for pid in ip("netns", "pids", namespace).split()]
    except NetworkError:
        return []


def remove(namespaces: list[str]) -> None:
    """Kill every process in the namespaces, then delete them (what is already gone is skipped)."""
    for namespace in namespaces:
        for pid in pids_in(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for namespace in namespaces:
        try:
            ip("netns", "delete", namespace)
        except NetworkError:
            if (NETNS_DIR / namespace).exists():
                raise


def _is_cluster_run(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"scripts.bench.cluster" in command


def sweep() -> list[str]:
    """Remove the namespaces (and their processes) and work directories of runs whose
    process has died; the namespaces removed."""
    stale = stale_namespaces(run_namespaces(), _is_cluster_run)
    remove(stale)
    for prefix in {run[0] for name in stale if (run := run_of(name)) is not None}:
        for work_dir in Path(tempfile.gettempdir()).glob(f"{prefix}-*"):
            shutil.rmtree(work_dir, ignore_errors=True)
    return stale


def connect_in(namespace: str, address: tuple[str, int], timeout_s: float) -> socket.socket:
    """A TCP connection to ``address`` made from inside ``namespace``."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_connect() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with (NETNS_DIR / namespace).open("rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns {namespace}: {os.strerror(error)}")
            made.append(socket.create_connection(address, timeout=timeout_s))
        except OSError as err:
            failed.append(err)

    # The thread ends in the namespace it entered; the socket keeps it.
    thread = threading.Thread(target=enter_and_connect, daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    if made:
        return made[0]
    if failed:
        raise failed[0]
    raise TimeoutError(f"no connection to {address[0]}:{address[1]} within {timeout_s} s")
