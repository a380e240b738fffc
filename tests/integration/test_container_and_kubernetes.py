"""The container and Kubernetes files in scripts/deploy lint clean and agree with the checkout.

No container engine or cluster runs here: the Containerfile is linted with hadolint and
checked against the files it copies; the manifests are validated offline with
kubernetes-validate (strict, fixed Kubernetes versions), and the settings file in the
ConfigMap is loaded by prefork_lb's own loader. Each linter is also shown a planted
mistake, so a linter that stopped finding anything would fail here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefork_lb.config import CONFIG_FILE_ENV, ENV_PREFIX, ConfigError, Settings, load_config
from tests.integration.test_deployment import graceful_timeout
from tests.support import deploy_drills
from tests.support.balancer import ROOT
from tests.support.containerfile import (
    CONTAINERFILE,
    copied_from_context,
    environment,
    exec_form,
    final_stage,
    healthcheck_command,
    instructions,
)

KUBERNETES = ROOT / "scripts" / "deploy" / "kubernetes"
VENV_BIN = Path(sys.executable).parent
# The oldest Kubernetes the manifests are for (the preStop sleep action is on by default
# from 1.30), and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def hadolint(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """hadolint on ``path``, failing on any finding, with no configuration file of anyone's."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)}
    return subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_containerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint finds nothing in the Containerfile, not even a style remark."""
    result = hadolint(CONTAINERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_fails_on_a_planted_mistake(tmp_path: Path) -> None:
    """An apt-get install without --no-install-recommends in the Containerfile fails the lint."""
    planted = tmp_path / "Containerfile"
    text = CONTAINERFILE.read_text()
    planted.write_text(
        text.replace(
            "\nWORKDIR /opt/prefork_lb\n",
            "\nRUN apt-get update && apt-get install -y curl\nWORKDIR /opt/prefork_lb\n",
            1,
        )
    )
    assert planted.read_text() != text
    result = hadolint(planted, tmp_path)
    assert result.returncode != 0
    assert "DL3015" in result.stdout  # --no-install-recommends


def test_containerfile_copies_only_what_the_checkout_has() -> None:
    """Every COPY source from the build context exists in the checkout, so the build finds it."""
    copied = [source for sources, _ in copied_from_context(instructions()) for source in sources]
    assert copied, "no COPY from the build context"
    for source in copied:
        assert (ROOT / source).exists(), source
    # The package is installed from a wheel built of these: its code and its metadata.
    assert {"pyproject.toml", "README.rst", "prefork_lb", "gunicorn.conf.py"} <= set(copied)


def test_the_wheel_the_image_installs_holds_every_package() -> None:
    """pyproject.toml lists every package under prefork_lb, as the image's wheel needs.

    The editable install of the tests finds a subpackage missing from the list; the wheel
    the image installs would not have it.
    """
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "prefork_lb").rglob("__init__.py")
    }
    assert listed == found


def test_containerfile_runs_gunicorn_with_the_config_it_copied() -> None:
    """The CMD's gunicorn config file is copied into the working directory it runs in."""
    stage = final_stage()
    (cmd,) = [exec_form(args) for keyword, args in stage if keyword == "CMD"]
    assert cmd == ["gunicorn", "-c", "gunicorn.conf.py"]
    (workdir,) = [args for keyword, args in stage if keyword == "WORKDIR"]
    assert workdir == "/opt/prefork_lb"
    assert (["gunicorn.conf.py"], "./") in copied_from_context(stage)


def test_containerfile_runs_as_a_user_and_stops_with_term() -> None:
    """The image runs as a numeric non-root user, listens on its PORT and stops on SIGTERM."""
    stage = dict(final_stage())
    user, _, group = stage["USER"].partition(":")
    assert int(user) > 0
    assert int(group) > 0
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert environment(final_stage())["PORT"] == stage["EXPOSE"] == "8000"
    probe = " ".join(healthcheck_command(final_stage()))
    assert "/_prefork_lb/ready" in probe
    # Neither is in the slim image.
    assert "curl" not in probe
    assert "wget" not in probe


def test_the_images_command_serves_and_its_healthcheck_follows_readiness() -> None:
    """The image's CMD serves on 0.0.0.0:$PORT; its HEALTHCHECK passes only while a backend is up.

    Replayed in a network namespace of its own (tests/support/image_drill.py); the probe
    must never reach the backend, and TERM must stop the balancer with status 0.
    """
    report = deploy_drills.run_drill("image")
    log = report["log"]
    assert report["listening_on_any_address"] is True, log
    assert report["workers"] > 0, log
    assert report["healthy_with_backend"] == 0, log
    assert report["healthy_without_backend"] != 0, log
    assert report["forwarded_probes"] == [], log
    assert report["home_made"] is False  # the image's user has no home to write to
    assert report["exit_status"] == 0, log


def kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate, strict, against one fixed Kubernetes version, offline."""
    return subprocess.run(
        [
            str(VENV_BIN / "kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            version,
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_validate(version: str) -> None:
    """Every manifest validates strictly against the Kubernetes schemas of that version."""
    result = kubernetes_validate(MANIFESTS, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(MANIFESTS), result.stdout


def test_kubernetes_validate_fails_on_a_misspelled_field(tmp_path: Path) -> None:
    """A misspelled field in the Deployment fails the strict validation, naming the field."""
    planted = tmp_path / "deployment.yaml"
    text = (KUBERNETES / "deployment.yaml").read_text()
    planted.write_text(text.replace("readinessProbe:", "readynessProbe:"))
    assert planted.read_text() != text
    result = kubernetes_validate([planted], KUBERNETES_VERSIONS[0])
    assert result.returncode != 0
    assert "'readynessProbe' was unexpected" in result.stdout + result.stderr


def manifest(name: str) -> dict[str, Any]:
    """One manifest of scripts/deploy/kubernetes as a dict."""
    loaded = yaml.safe_load((KUBERNETES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def container() -> dict[str, Any]:
    """The prefork_lb container of the Deployment."""
    (only,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_deployment_waits_for_kube_proxy_then_for_gunicorn() -> None:
    """The grace period outlasts the preStop sleep plus gunicorn's graceful_timeout."""
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    sleep = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > 0
    assert pod["terminationGracePeriodSeconds"] > sleep + graceful_timeout()


def test_deployment_probes_the_balancers_own_endpoints() -> None:
    """Readiness asks /_prefork_lb/ready and liveness /_prefork_lb/live, on the served port."""
    spec = container()
    (port,) = spec["ports"]
    assert spec["readinessProbe"]["httpGet"] == {"path": "/_prefork_lb/ready", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/_prefork_lb/live", "port": "http"}
    # The image listens on $PORT (8000): the container port must be that one.
    assert port == {"name": "http", "containerPort": 8000}


def test_deployment_sizes_workers_from_the_cpu_limit() -> None:
    """GUNICORN_CMD_ARGS takes --workers from the container's CPU limit, which is set."""
    spec = container()
    env = {item["name"]: item for item in spec["env"]}
    source = env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu"
    assert source["containerName"] == spec["name"]
    # Kubernetes expands $(NAME) only for variables defined before this one.
    names = [item["name"] for item in spec["env"]]
    assert names.index("CPU_LIMIT") < names.index("GUNICORN_CMD_ARGS")
    flags = shlex.split(env["GUNICORN_CMD_ARGS"]["value"])
    assert flags[flags.index("--workers") + 1] == "$(CPU_LIMIT)"
    assert spec["resources"]["limits"]["cpu"]
    assert spec["resources"]["requests"]["cpu"]


def test_read_only_root_leaves_gunicorn_a_writable_tmpfs() -> None:
    """With a read-only root the heartbeat files go to /dev/shm and /tmp is an emptyDir."""
    spec = container()
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item.get("value") for item in spec["env"]}
    flags = shlex.split(env["GUNICORN_CMD_ARGS"])
    assert flags[flags.index("--worker-tmp-dir") + 1] == "/dev/shm"
    mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_pods_get_no_service_variables_that_read_as_settings() -> None:
    """The Service's docker-link variables would be PREFORK_LB_*, so the pods go without them."""
    name = manifest("service.yaml")["metadata"]["name"]
    link_prefix = name.upper().replace("-", "_") + "_"  # PREFORK_LB_SERVICE_HOST, ...
    assert link_prefix.startswith(ENV_PREFIX)
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    with pytest.raises(ConfigError, match="PREFORK_LB_SERVICE_HOST: unknown setting"):
        load_config(
            {
                "PREFORK_LB_BACKENDS": "http://10.0.0.5:8080",
                f"{link_prefix}SERVICE_HOST": "10.96.0.9",
            }
        )


def configmap_settings_file(tmp_path: Path) -> tuple[Path, str]:
    """The ConfigMap's TOML written where the Deployment's PREFORK_LB_CONFIG would find it."""
    data = manifest("configmap.yaml")["data"]
    env = {item["name"]: item.get("value") for item in container()["env"]}
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "config")
    path = Path(env[CONFIG_FILE_ENV])
    assert path.parent == Path(mount["mountPath"])
    assert path.name in data
    written = tmp_path / path.name
    written.write_text(data[path.name])
    return written, data[path.name]


def test_configmap_settings_load_with_prefork_lbs_own_loader(tmp_path: Path) -> None:
    """The TOML in the ConfigMap is a valid prefork_lb settings file, backends from DNS."""
    written, text = configmap_settings_file(tmp_path)
    settings = load_config({CONFIG_FILE_ENV: str(written)})
    assert isinstance(settings, Settings)
    assert 'dns = "backend.default.svc.cluster.local:8080"' in text


def test_configmap_dns_name_is_the_headless_service() -> None:
    """The ConfigMap's dns name and port are the example headless Service's."""
    service = manifest("backend-headless-service.yaml")
    assert service["spec"]["clusterIP"] == "None"
    (port,) = service["spec"]["ports"]
    name = service["metadata"]["name"]
    text = manifest("configmap.yaml")["data"]["prefork_lb.toml"]
    assert f'dns = "{name}.default.svc.cluster.local:{port["port"]}"' in text


def test_service_and_budget_select_the_deployments_pods() -> None:
    """The Service and the PodDisruptionBudget select exactly the Deployment's pod labels."""
    deployment = manifest("deployment.yaml")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"] == labels
    assert manifest("service.yaml")["spec"]["selector"] == labels
    assert manifest("poddisruptionbudget.yaml")["spec"]["selector"]["matchLabels"] == labels
    (port,) = manifest("service.yaml")["spec"]["ports"]
    assert port["targetPort"] == container()["ports"][0]["name"]
