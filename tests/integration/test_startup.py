"""Starting the balancer: bad settings stop it early, gunicorn flags apply, the demo runs."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.backend import ScriptedBackend
from tests.support.balancer import ROOT, BalancerProcess, clean_environ, gunicorn_command
from tests.support.client import fetch


def _run_until_exit(
    env: dict[str, str], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gunicorn_command("--bind=127.0.0.1:0", "--workers=1", *args),
        cwd=ROOT,
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({"PREFORK_LB_BACKENDS": "http://[::1"}, "http://[::1", id="unparseable-url"),
        pytest.param({"PREFORK_LB_BACKENDS": "ftp://10.0.0.5"}, "ftp", id="unsupported-scheme"),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:1", "PREFORK_LB_READ_TIMEOUT": "-1"},
            "PREFORK_LB_READ_TIMEOUT",
            id="negative-timeout",
        ),
        pytest.param(
            {"PREFORK_LB_BACKENDS": "http://h:1", "PREFORK_LB_BACKEND": "http://h:2"},
            "PREFORK_LB_BACKEND",
            id="unknown-env-setting",
        ),
        pytest.param({}, "PREFORK_LB_BACKENDS", id="no-backends"),
        pytest.param({"PREFORK_LB_BACKENDS": " , "}, "PREFORK_LB_BACKENDS", id="empty-list"),
    ],
)
def test_bad_setting_stops_master_before_binding(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    """A bad setting stops the master before it binds, with one line naming it, exit non-zero."""
    result = _run_until_exit(env, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, output
    assert named in error_lines[0]
    assert "Traceback" not in output
    assert "Listening at" not in output


def test_dangerous_header_map_is_refused(tmp_path: Path) -> None:
    """--header-map dangerous would let Transfer_Encoding frame a body: the master refuses it."""
    env = {"PREFORK_LB_BACKENDS": "http://h:1"}
    result = _run_until_exit(env, tmp_path, "--header-map", "dangerous")
    assert result.returncode != 0
    assert "Error: prefork_lb configuration: header_map 'dangerous'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_in_config_file_is_named(tmp_path: Path) -> None:
    """An unknown key in the TOML file stops the master with the file and the key named."""
    config = tmp_path / "lb.toml"
    config.write_text('read_timeout = 3\nwieght = 2\n[[backends]]\nurl = "http://h:1"\n')
    result = _run_until_exit({"PREFORK_LB_CONFIG": str(config)}, tmp_path)
    assert result.returncode != 0
    assert "wieght" in result.stderr
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_backends_are_used(tmp_path: Path) -> None:
    """Backends and timeouts from the TOML file named by PREFORK_LB_CONFIG are used."""
    with ScriptedBackend("from-file") as backend:
        config = tmp_path / "lb.toml"
        config.write_text(f'connect_timeout = 2\n[[backends]]\nurl = "{backend.url}"\n')
        with BalancerProcess([], workers=1, env={"PREFORK_LB_CONFIG": str(config)}) as lb:
            assert fetch(lb.port).body == b"from-file\n"


def test_gunicorn_flags_override_the_config(three_backends: list[ScriptedBackend]) -> None:
    """Gunicorn's own flags (here --workers) apply on top of gunicorn.conf.py."""
    urls = [b.url for b in three_backends]
    workers = (os.cpu_count() or 1) + 1  # not the config's default
    with BalancerProcess(urls, workers=workers) as lb:
        assert len(lb.worker_pids()) == workers


def test_no_shared_control_socket(three_backends: list[ScriptedBackend], tmp_path: Path) -> None:
    """Two balancers run side by side and neither opens gunicorn's per-user control socket."""
    urls = [b.url for b in three_backends]
    home = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    with contextlib.ExitStack() as cleanup:
        pair = []
        for _ in range(2):  # both boot at once: a test pays for one start, not two
            lb = BalancerProcess(urls, workers=1, env=home)
            cleanup.callback(lb.stop, quick=True)
            pair.append(lb)
        for lb in pair:
            assert fetch(lb.wait_ready().port).status == 200
        assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_serve_script_runs_demo_backends_in_rotation(tmp_path: Path) -> None:
    """scripts/serve with nothing configured starts three demo backends and rotates over them."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "serve"), f"--bind=fd://{listener.fileno()}", "--workers=2"],
            env=clean_environ({}),
            pass_fds=[listener.fileno()],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        answers = [fetch(port, timeout=60).body.decode().strip() for _ in range(6)]
        assert answers == ["demo-1", "demo-2", "demo-3"] * 2
        text = log.read_text()
        assert "for i in 1 2 3 4 5 6; do curl -s" in text
        demo_ports = [int(p) for p in re.findall(r"backend http://127\.0\.0\.1:(\d+)", text)]
        assert len(demo_ports) == 3
    finally:
        process.terminate()
        process.wait(timeout=15)
        listener.close()
    assert process.returncode == 0
    for demo_port in demo_ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", demo_port), timeout=2).close()
