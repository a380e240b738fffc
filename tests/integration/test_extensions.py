"""Extensions in a real balancer: every phase, their order, failures, and what on_complete learns.

One balancer (two workers) runs the recorders ``First`` (A) and ``Second``
(B) from tests/support/extensions.py for the whole module, in front of the
shared backend (named ``main``) and a backup named ``dead`` that refuses
connections and is never marked down, so a request sent there is retried.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.integration.conftest import StartBalancer
from tests.support.backend import ScriptedBackend
from tests.support.balancer import BalancerProcess
from tests.support.client import Reply, fetch
from tests.support.extensions import BAD_LINES
from tests.support.polling import wait_for
from tests.support.wsbackend import WebSocketBackend

FIRST = "tests.support.extensions:First"
SECOND = "tests.support.extensions:Second"


@pytest.fixture(scope="module")
def complete_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file on_complete writes its JSON lines to."""
    return tmp_path_factory.mktemp("extensions") / "complete.jsonl"


@pytest.fixture(scope="module")
def balancer(echo_backend: ScriptedBackend, complete_log: Path) -> Iterator[BalancerProcess]:
    """Two workers running First and Second, in front of ``main`` and a dead backup (its port
    held bound, never listening, while the balancer runs: refused, and nobody else's)."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        backends = [
            f"{echo_backend.url} name=main",
            f"http://127.0.0.1:{dead_port} backup name=dead max_fails=0",
        ]
        options = {name: {"log": str(complete_log)} for name in (FIRST, SECOND)}
        env = {
            "PREFORK_LB_EXTENSIONS": f"{FIRST}, {SECOND}",
            "PREFORK_LB_EXTENSION_OPTIONS": json.dumps(options),
        }
        with BalancerProcess(backends, workers=2, env=env) as lb:
            yield lb


@pytest.fixture
def backend(echo_backend: ScriptedBackend, balancer: BalancerProcess) -> ScriptedBackend:
    """The shared backend with no routes or recorded requests, behind the running balancer."""
    echo_backend.clear(routes=True)
    return echo_backend


def completed(log: Path, request_id: str, tag: str = "A") -> dict[str, object]:
    """The on_complete line extension ``tag`` wrote for ``request_id`` (waits for it)."""

    def find() -> dict[str, object] | None:
        if not log.exists():
            return None
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry["id"] == request_id and entry["tag"] == tag:
                return dict(entry)
        return None

    found: list[dict[str, object]] = []

    def written() -> bool:
        entry = find()
        if entry is not None:
            found.append(entry)
        return entry is not None

    wait_for(written, f"an on_complete line for {request_id}")
    return found[0]


def call(lb: BalancerProcess, target: str = "/", **headers: str) -> tuple[Reply, str]:
    """One request with a fresh X-Request-ID (the balancer keeps it): the reply and that ID."""
    rid = uuid.uuid4().hex
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return fetch(lb.port, target, headers={"X-Request-ID": rid, **extra}), rid


def error_count(lb: BalancerProcess, extension: str, phase: str) -> float:
    """``prefork_lb_extension_errors_total`` for one extension and phase."""
    reply = fetch(lb.port, "/_prefork_lb/metrics")
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "prefork_lb_extension_errors_total" and labels == {
                "extension": extension,
                "phase": phase,
            }:
                return sample.value
    return 0.0


def test_phases_run_in_order_on_a_forwarded_request(
    backend: ScriptedBackend, balancer: BalancerProcess, complete_log: Path
) -> None:
    """Each phase runs for A then B, and the phases in the order of the request's path."""
    reply, rid = call(balancer)
    assert reply.status == 200
    assert reply.body == b"echo\n"
    assert reply.header("X-Trail") == [
        "A.on_request,B.on_request,A.on_upstream_request,B.on_upstream_request,"
        "A.on_response,B.on_response"
    ]
    (seen,) = backend.wait_for_requests(1)
    assert seen.header("X-Trail-A") == ["A.on_request,B.on_request,A.on_upstream_request"]
    assert seen.header("X-Backend-Name-B") == ["main"]
    trail = completed(complete_log, rid, "B")["trail"]
    assert trail == [
        "A.on_request",
        "B.on_request",
        "A.on_upstream_request",
        "B.on_upstream_request",
        "A.on_response",
        "B.on_response",
        "A.on_complete",
        "B.on_complete",
    ]


@pytest.mark.parametrize(
    ("tag", "ran"), [("A", ["A.on_request"]), ("B", ["A.on_request", "B.on_request"])]
)
def test_the_first_on_request_answer_wins(
    backend: ScriptedBackend,
    balancer: BalancerProcess,
    complete_log: Path,
    tag: str,
    ran: list[str],
) -> None:
    """An on_request answer goes out at once; later extensions and the backend see nothing."""
    reply, rid = call(balancer, X_Answer=tag)
    assert (reply.status, reply.body, reply.header("X-Answered-By")) == (203, tag.encode(), [tag])
    assert reply.header("Content-Length") == ["1"]
    entry = completed(complete_log, rid, "A")
    assert entry["trail"] == [*ran, "A.on_complete"]
    assert entry["backend"] is None
    assert entry["status"] == 203
    assert entry["bytes_sent"] == 1
    assert backend.requests == []


def test_on_upstream_request_runs_again_on_a_retry(
    backend: ScriptedBackend, balancer: BalancerProcess, complete_log: Path
) -> None:
    """request.backend picks the dead backend; its refusal is retried and the phase runs again."""
    reply, rid = call(balancer, X_Backend="dead")
    assert reply.status == 200
    (seen,) = backend.wait_for_requests(1)
    trail = seen.header("X-Trail-B")[0].split(",")
    assert trail.count("A.on_upstream_request") == 2
    assert trail.count("B.on_upstream_request") == 2
    entry = completed(complete_log, rid)
    assert entry["backend"] == "main"


def test_headers_with_cr_lf_nul_or_bad_names_are_refused(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """Lines with CR, LF, NUL or a bad name raise ValueError; framing stays the balancer's."""
    reply = fetch(balancer.port, "/", method="POST", headers={"X-Smuggle": "1"}, body=b"hello")
    assert reply.status == 200
    (seen,) = backend.wait_for_requests(1)
    assert seen.header("X-Refused") == [str(2 * len(BAD_LINES))]
    assert seen.header("Injected") == []
    assert seen.header("X-Evil") == []
    assert seen.header("Content-Length") == ["5"]
    assert seen.header("Transfer-Encoding") == []
    assert seen.body == b"hello"


@pytest.mark.parametrize("phase", ["on_request", "on_upstream_request", "on_response"])
def test_an_exception_gives_a_500_counted_and_the_worker_goes_on(
    backend: ScriptedBackend, balancer: BalancerProcess, complete_log: Path, phase: str
) -> None:
    """An exception in a phase before the head is a 500 with a short text, logged and counted."""
    before = error_count(balancer, SECOND, phase)
    reply, rid = call(balancer, X_Raise=f"B.{phase}")
    assert reply.status == 500
    assert reply.body == b"500 Internal Server Error: an extension of the balancer failed\n"
    assert error_count(balancer, SECOND, phase) == before + 1
    balancer.wait_for_log(rf"extension {SECOND}: {phase} raised RuntimeError")
    entry = completed(complete_log, rid)
    assert entry["status"] == 500
    assert entry["error"] == "ExtensionFailed"
    for _ in range(4):  # both workers go on serving
        assert fetch(balancer.port, "/").status == 200


def test_an_exception_in_on_complete_is_logged_and_counted(balancer: BalancerProcess) -> None:
    """An exception in on_complete changes nothing for the client; it is logged and counted."""
    before = error_count(balancer, FIRST, "on_complete")
    reply = fetch(balancer.port, "/", headers={"X-Raise": "A.on_complete"})
    assert reply.status == 200
    wait_for(lambda: error_count(balancer, FIRST, "on_complete") == before + 1, "the error counted")
    balancer.wait_for_log(rf"extension {FIRST}: on_complete raised")


def test_on_complete_learns_how_a_forwarded_request_ended(
    backend: ScriptedBackend, balancer: BalancerProcess, complete_log: Path
) -> None:
    """For a relayed response on_complete gets the backend, its time and the bytes sent."""
    backend.route("/big", lambda record, responder: responder.respond(200, "OK", [], b"x" * 5000))
    reply, rid = call(balancer, "/big")
    assert reply.status == 200
    entry = completed(complete_log, rid)
    assert entry["backend"] == "main"
    assert entry["bytes_sent"] == 5000
    assert isinstance(entry["upstream_time"], float)
    assert entry["error"] is None


def test_on_response_may_change_the_status_but_not_how_the_body_is_framed(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """on_response may turn 200 into 299; into 204 (no body) it may not: that is a 500."""
    reply = fetch(balancer.port, "/", headers={"X-Status": "299"})
    assert (reply.status, reply.body) == (299, b"echo\n")
    assert fetch(balancer.port, "/", headers={"X-Status": "204"}).status == 500


def test_admin_requests_do_not_go_through_extensions(balancer: BalancerProcess) -> None:
    """The admin endpoint answers without running any phase."""
    reply = fetch(balancer.port, "/_prefork_lb/backends", headers={"X-Answer": "A"})
    assert reply.status == 200
    assert reply.header("X-Answered-By") == []


def test_the_shared_counter_is_exact_across_workers(
    backend: ScriptedBackend, balancer: BalancerProcess
) -> None:
    """200 requests on fresh connections over both workers add exactly 400 (A and B count each)."""

    def count() -> int:
        return int(fetch(balancer.port, "/", headers={"X-Count": "1"}).body)

    start = count()
    workers: set[str] = set()

    def client() -> None:
        for _ in range(25):
            workers.update(fetch(balancer.port, "/").header("X-Worker"))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count() == start + 400
    assert workers <= {str(pid) for pid in balancer.worker_pids()}


@pytest.mark.parametrize(
    ("extension", "words"),
    [
        pytest.param("no_such_module:Thing", "cannot import 'no_such_module'", id="no-module"),
        pytest.param("tests.support.extensions:Nothing", "has no attribute", id="no-attribute"),
        pytest.param("tests.support.extensions:FailsToBuild", "no database", id="fails-to-build"),
    ],
)
def test_an_extension_that_cannot_start_stops_the_start(
    echo_backend: ScriptedBackend, extension: str, words: str
) -> None:
    """A name that does not import, or an extension raising when built, stops the start."""
    lb = BalancerProcess([echo_backend.url], workers=1, env={"PREFORK_LB_EXTENSIONS": extension})
    try:
        lb.process.wait(timeout=20)
    finally:
        lb.stop()
    assert lb.process.returncode != 0
    assert f"extension {extension!r}" in lb.log()
    assert words in lb.log()


def test_a_websocket_tunnel_goes_through_on_request_and_on_complete(
    start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """A WebSocket passes on_request and on_upstream_request; on_complete sees its 101."""
    log = tmp_path / "complete.jsonl"
    env = {
        "PREFORK_LB_EXTENSIONS": FIRST,
        "PREFORK_LB_EXTENSION_OPTIONS": json.dumps({FIRST: {"log": str(log)}}),
    }
    with WebSocketBackend() as server:
        lb = start_balancer([f"{server.url} name=ws"], workers=1, env=env)
        rid = uuid.uuid4().hex
        url = f"ws://127.0.0.1:{lb.port}/echo"
        with connect(url, additional_headers={"X-Request-ID": rid}) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
        entry = completed(log, rid)
    assert entry["status"] == 101
    assert entry["backend"] == "ws"
    assert entry["trail"] == ["A.on_request", "A.on_upstream_request", "A.on_complete"]
