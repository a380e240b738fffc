"""The installed state, worker slots, and a reload's new state: what carries over, what not."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from prefork_lb import shared
from prefork_lb.config import Member, Pool, Settings, parse_backend_url
from prefork_lb.health import BackendHealth
from prefork_lb.hooks import describe_changes
from prefork_lb.shared import handover

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


def _settings(*urls: str, weights: dict[str, int] | None = None, **options: object) -> Settings:
    backends = tuple(
        replace(parse_backend_url("test", url), weight=(weights or {}).get(url, 1)) for url in urls
    )
    return Settings(backends=backends, **options)  # type: ignore[arg-type]


def _down(reason: str) -> BackendHealth:
    return BackendHealth(up=False, since=12.5, reason=reason, failures=3, retry_at=99.0)


def _set_row(state: shared.SharedState, index: int, row: BackendHealth) -> None:
    state.health.update(index, lambda _: (row, None))


def test_installed_before_install(empty_slot: None) -> None:
    """Before install(), installed() explains that the balancer must be started through gunicorn."""
    with pytest.raises(RuntimeError, match=r"start it with `gunicorn -c gunicorn\.conf\.py`"):
        shared.installed()


def test_install_then_installed(empty_slot: None) -> None:
    """installed() returns the state install() made: the given settings and a fresh counter."""
    settings = Settings(demo=True, pool_size=3)
    state = shared.install(settings)
    assert shared.installed() is state
    assert state.settings is settings
    assert state.rotation.next() == 0


def test_install_again_replaces_state(empty_slot: None) -> None:
    """A second install() replaces the state, with a counter that starts again at 0."""
    first = shared.install(Settings(demo=True))
    first.rotation.next()
    second_settings = Settings(demo=True, pool_size=7)
    second = shared.install(second_settings)
    assert second is not first
    assert shared.installed() is second
    assert shared.installed().settings is second_settings
    assert second.rotation.peek() == 0


def test_orphaned_slots_are_freed(empty_slot: None) -> None:
    """Slots of workers gunicorn forgot without child_exit are cleared and handed out again."""
    state = shared.install(Settings(backends=(parse_backend_url("test", "http://a:1"),)))
    kept, lost_a, lost_b = (shared.assign_worker_slot() for _ in range(3))
    assert None not in (kept, lost_a, lost_b)
    state.in_flight.add(lost_a, 0, 3)  # type: ignore[arg-type]
    state.in_flight.add(kept, 0, 1)  # type: ignore[arg-type]
    assert sorted(shared.release_orphaned_slots([kept])) == sorted([lost_a, lost_b])
    assert state.in_flight.totals() == [1]
    assert shared.release_orphaned_slots([kept]) == []
    assert shared.assign_worker_slot() in (lost_a, lost_b)


def test_health_is_carried_over_by_url(empty_slot: None) -> None:
    """A backend in both lists keeps its health wherever it moved; a new one starts up."""
    old = shared.install(_settings(A, B))
    _set_row(old, 1, _down("status 500"))
    new = shared.reinstall(_settings(B, C, A), now=1234.0)
    _, rows = new.health.snapshot()
    assert rows[0] == _down("status 500")
    assert rows[1] == BackendHealth(up=True, since=1234.0, reason="added by a reload")
    assert rows[2] == BackendHealth()
    assert new.health.count == 3
    assert shared.installed() is new


def test_removed_backends_are_dropped(empty_slot: None) -> None:
    """A backend no longer listed has no row in the new state."""
    old = shared.install(_settings(A, B, C))
    _set_row(old, 0, _down("refused"))
    new = shared.reinstall(_settings(B))
    _, rows = new.health.snapshot()
    assert rows == (BackendHealth(),)


def test_rotation_continues(empty_slot: None) -> None:
    """The new state advances the same rotation, from where the old one stood."""
    old = shared.install(_settings(A, B))
    for _ in range(5):
        old.rotation.next()
    new = shared.reinstall(_settings(A, B, C))
    assert new.rotation.next() == 5
    assert new.started_at == old.started_at


def test_old_and_new_workers_contend_for_one_prober_lease(empty_slot: None) -> None:
    """A worker forked before the reload that holds the lease keeps the new workers from it."""
    old = shared.install(_settings(A, B))
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            code = 0 if old.health.try_lease() else 1
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        new = shared.reinstall(_settings(A, B, C))
        assert new.health.lease is old.health.lease
        assert not new.health.try_lease()
    finally:
        os.write(done_w, b"x")
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(done_w)
    assert os.waitstatus_to_exitcode(status) == 0
    # Its holder gone, the lease is free for a new worker.
    assert new.health.try_lease()


def test_slots_of_old_workers_stay_taken_until_they_exit(empty_slot: None) -> None:
    """Old workers keep their in-flight slots; when one exits, its row in its table is cleared."""
    old = shared.install(_settings(A, B))
    first, second = shared.assign_worker_slot(), shared.assign_worker_slot()
    assert (first, second) == (0, 1)
    old.in_flight.add(0, 1, 4)
    new = shared.reinstall(_settings(A, B, C))
    assert shared.assign_worker_slot() == 2
    shared.release_worker_slot(0)
    assert old.in_flight.totals() == [0, 0]
    assert new.in_flight.taken() == [1, 2]
    # The freed slot goes to the next worker; the old worker's does not go twice.
    assert shared.assign_worker_slot() == 0
    shared.release_worker_slot(1)
    assert handover._retired_slots == {}


def test_slots_survive_two_reloads(empty_slot: None) -> None:
    """A worker from two reloads ago still has its slot cleared in the table it inherited."""
    first = shared.install(_settings(A))
    assert (shared.assign_worker_slot(), shared.assign_worker_slot()) == (0, 1)
    first.in_flight.add(0, 0, 2)
    first.in_flight.add(1, 0, 3)
    second = shared.reinstall(_settings(A, B))
    assert shared.assign_worker_slot() == 2
    third = shared.reinstall(_settings(B))
    assert handover._retired_slots == {0: first.in_flight, 1: first.in_flight, 2: second.in_flight}
    shared.release_worker_slot(0)
    assert first.in_flight.totals() == [3]
    assert third.in_flight.taken() == [1, 2]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(_settings(A, B), _settings(A, B), "no change", id="same"),
        pytest.param(
            _settings(A, B),
            _settings(A, B, C, weights={C: 2}),
            f"backends added [{C}]",
            id="added",
        ),
        pytest.param(
            _settings(A, B, C),
            _settings(A, C, weights={A: 3}),
            f"backends removed [{B}], re-weighted [{A} 1->3]",
            id="removed-reweighted",
        ),
        pytest.param(_settings(A, B), _settings(B, A), "backends reordered", id="reordered"),
        pytest.param(
            _settings(A),
            _settings(A, read_timeout=5.0, retries=0),
            "settings changed [read_timeout, retries]",
            id="settings",
        ),
    ],
)
def test_describe_changes(old: Settings, new: Settings, expected: str) -> None:
    """The reload's log line names what changed, or says that nothing did."""
    assert describe_changes(old, new) == expected


def test_reload_keeps_each_pools_rotation_by_name(empty_slot: None) -> None:
    """A reload carries each pool's rotation counter over by pool name; a new pool starts at 0."""

    def pools(*names: str) -> Settings:
        return replace(
            _settings(A, B),
            pools=tuple(Pool(name, (Member(0), Member(1))) for name in names),
        )

    old = shared.install(pools("api", "web"))
    for _ in range(3):
        old.rotations[0].next()
    old.rotations[1].next()
    new = shared.reinstall(pools("web", "static", "api"))
    assert [counter.peek() for counter in new.rotations] == [1, 0, 3]
    assert new.admission.pools == 3
