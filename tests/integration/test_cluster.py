"""scripts/cluster builds a real cluster in network namespaces, and what it reports holds.

One quick run (3 Python backends and the Python load driver even where nginx and wrk
are installed, so that every machine makes the run CI makes, where they are not;
3 prefork_lb instances with 2 workers; HAProxy in TCP mode with PROXY v2 and HTTP
checks) is shared by the tests that read its JSON. Two more runs (Python backends
too) are cut short, by TERM and by KILL, to show that nothing of a run outlives it
however it ends. Needs root and iproute2 (CI runs as root; scripts/system.sh
installs iproute2 and haproxy).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.balancer import ROOT
from tests.support.polling import wait_for

CLUSTER = ROOT / "scripts" / "cluster"
RUN_TIMEOUT_S = 150
# Added to HAProxy's fall x inter: its check timer's phase, and a loaded machine.
DETECTION_MARGIN_S = 1.0
_NAMESPACE = re.compile(r"^(plbc-(\d+)-([0-9a-f]{4}))-")


def namespaces() -> list[str]:
    """Every network namespace on the machine."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]


def root_links() -> list[str]:
    """The interface names in the host's own namespace."""
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip().split("@")[0] for line in listing.stdout.splitlines()]


def leftovers(prefix: str, tag: str) -> list[str]:
    """Namespaces of the run, and links named for it in the host's namespace."""
    found = [name for name in namespaces() if name.startswith(prefix + "-")]
    return found + [link for link in root_links() if link.startswith(tag + "-")]


def run_namespaces_of(pid: int) -> list[str]:
    """The namespaces the run with process id ``pid`` has made so far."""
    return [n for n in namespaces() if (m := _NAMESPACE.match(n)) and int(m.group(2)) == pid]


def pids_in(namespace: str) -> list[int]:
    """The processes running inside ``namespace``."""
    listing = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in listing.stdout.split()]


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick cluster run's JSON, shared by the module's tests."""
    save_as = tmp_path_factory.mktemp("cluster") / "cluster.json"
    done = subprocess.run(
        [str(CLUSTER), "--quick", "--python-load", "--python-backends", "--json", str(save_as)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"scripts/cluster failed:\n{done.stdout}\n{done.stderr}"
    document: dict[str, Any] = json.loads(save_as.read_text())
    return document


def start_cut_short_run(progress: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A run started and waited for until it says every server is up (its progress lines
    go to ``progress``): the run, and the pids of the servers in its namespaces.

    Waiting for a process in HAProxy's namespace is not enough: while the run builds
    the namespaces, a short-lived ``ip -n NAMESPACE ...`` is one.
    """
    with progress.open("wb") as output:
        process = subprocess.Popen(
            [str(CLUSTER), "--quick", "--python-backends"], stdout=subprocess.DEVNULL, stderr=output
        )

    def cluster_up() -> bool:
        said = progress.read_text(errors="replace")
        assert process.poll() is None, f"scripts/cluster exited before it was interrupted:\n{said}"
        return "  up in " in said

    wait_for(cluster_up, "scripts/cluster saying its servers are up", timeout=60)
    pids = [pid for name in run_namespaces_of(process.pid) for pid in pids_in(name)]
    # 3 backends, 3 gunicorn masters with their workers, HAProxy.
    assert len(pids) >= 7, (pids, progress.read_text(errors="replace"))
    return process, pids


def test_rolling_hup_fails_no_request(report: dict[str, Any]) -> None:
    """A HUP of each instance in turn, each ready before the next, fails no request under load."""
    hup = report["rolling_hup"]
    assert hup["requests"] > 0
    assert hup["failed"] == 0, hup["failure_reasons"]
    assert [step["instance"] for step in hup["steps"]] == ["lb1", "lb2", "lb3"]


def test_sigkill_fails_at_most_what_the_instance_held(report: dict[str, Any]) -> None:
    """Killing an instance's master and workers fails only requests on connections it held: those
    open to it at the kill, and those it accepted while its processes died."""
    kill = report["kill"]
    assert kill["held_connections"] > 0
    assert kill["failed"] <= kill["held_connections"] + kill["accepted_while_dying"]
    assert kill["failed_on_held"] == kill["failed"]


def test_haproxy_stops_sending_to_the_killed_instance_within_its_checks(
    report: dict[str, Any],
) -> None:
    """HAProxy marks the killed instance DOWN within fall x inter (plus a margin), and no
    request is served by it after the kill."""
    kill = report["kill"]
    assert kill["detection_bound_s"] == 1.0
    assert kill["detect_s"] <= kill["detection_bound_s"] + DETECTION_MARGIN_S
    assert kill["served_after_kill"] == 0
    assert kill["haproxy_attempts_after_down"] == 0


def test_the_restarted_instance_takes_traffic_again(report: dict[str, Any]) -> None:
    """After its restart the killed instance gets its share of new connections through HAProxy."""
    kill = report["kill"]
    assert kill["restarted_served_fresh"] >= 1
    assert report["rolling_hup"]["served_by"][kill["instance"]] > 0


def test_hash_keys_reach_one_backend_whichever_instance_serves(report: dict[str, Any]) -> None:
    """Each key goes to the same backend through lb1, lb2, lb3 alone and through HAProxy."""
    hashing = report["hashing"]
    assert hashing["disagree"] == {}
    assert hashing["agree"] == hashing["keys"] > 0
    # Not a degenerate case: the keys spread over the backends, HAProxy spread them over instances.
    assert hashing["backends_used"] >= 2
    assert sorted(hashing["haproxy_sent_keys_to"]) == ["lb1", "lb2", "lb3"]


def test_throughput_is_measured_with_one_two_and_three_instances(report: dict[str, Any]) -> None:
    """Each row has requests per second above zero, served only by the instances in service."""
    rows = report["throughput"]
    assert [row["instances"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["requests_per_s"] > 0
        assert row["failed"] == 0
        serving = [name for name, count in row["served_by"].items() if count > 0]
        assert serving == ["lb1", "lb2", "lb3"][: row["instances"]]


def test_a_finished_run_leaves_nothing_behind(report: dict[str, Any]) -> None:
    """After a run, no namespace of it, and no link named for it in the host's namespace."""
    prefix = report["run"]["prefix"]
    assert prefix.startswith("plbc-")
    assert leftovers(prefix, prefix.rsplit("-", 1)[1]) == []


def test_term_takes_a_running_cluster_down(tmp_path: Path) -> None:
    """TERM in the middle of a run stops every process of it and deletes its namespaces."""
    process, pids = start_cut_short_run(tmp_path / "progress.txt")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) != 0
    assert run_namespaces_of(process.pid) == []
    assert [pid for pid in pids if alive(pid)] == []


def test_the_next_start_sweeps_up_after_a_killed_run(tmp_path: Path) -> None:
    """A run killed outright leaves its namespaces and servers; the next start removes them."""
    process, pids = start_cut_short_run(tmp_path / "progress.txt")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    left = run_namespaces_of(process.pid)
    assert left  # SIGKILL cannot be caught: this is what the sweep is for
    assert any(alive(pid) for pid in pids)
    done = subprocess.run(
        [str(CLUSTER), "--sweep"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "left by runs that died" in done.stderr
    assert all(name in done.stderr for name in left)
    assert run_namespaces_of(process.pid) == []
    wait_for(lambda: not any(alive(pid) for pid in pids), "the killed run's servers gone", 10)
    prefix = left[0].rsplit("-", 1)[0]
    assert not any(Path(tempfile.gettempdir()).glob(f"{prefix}-*"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(
            ["--connections", "0"],
            "--connections: needs a positive whole number, got '0'",
            id="zero",
        ),
        pytest.param(
            ["--workers", "two"], "--workers: needs a positive whole number, got 'two'", id="word"
        ),
        pytest.param(["--bogus"], "unrecognized arguments: --bogus", id="unknown"),
    ],
)
def test_bad_arguments_are_named(arguments: list[str], message: str) -> None:
    """A bad option is refused with a message naming it, before anything is built."""
    done = subprocess.run(
        [str(CLUSTER), *arguments], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
