"""The Containerfile's last stage replayed without a container engine, on the installed project.

Its COPY of the config into a working directory of its own, its ENV, its CMD; then its
HEALTHCHECK command, with the backend up and down. Not its USER: the interpreter of the
tests' virtualenv may live where only root reads (pyenv under /root), so the drill runs
as root, with a HOME that does not exist. Run in a network namespace of its own
(tests/support/deploy_drills.py): the image's port, on every address, is the drill's.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.backend import ScriptedBackend
from tests.support.balancer import ROOT, child_pids, clean_environ
from tests.support.containerfile import (
    copied_from_context,
    environment,
    exec_form,
    final_stage,
    healthcheck_command,
)
from tests.support.namespace import listens_on_any_address
from tests.support.polling import wait_for


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
            listening = listens_on_any_address(port)
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
