"""scripts/deploy/Containerfile read as a list of instructions, for the tests that check it."""

from __future__ import annotations

import json
import re
import shlex

from tests.support.balancer import ROOT

CONTAINERFILE = ROOT / "scripts" / "deploy" / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """Every instruction as (KEYWORD, arguments), continuation lines joined, comments left out."""
    logical = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    found = []
    for line in logical.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage, from its FROM on."""
    steps = instructions()
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def copied_from_context(steps: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """The (sources, destination) of each COPY that takes files from the build context."""
    copies = []
    for keyword, arguments in steps:
        words = shlex.split(arguments)
        if keyword != "COPY" or any(word.startswith("--from") for word in words):
            continue
        *sources, destination = [word for word in words if not word.startswith("--")]
        copies.append((sources, destination))
    return copies


def exec_form(arguments: str) -> list[str]:
    """A CMD in exec (JSON) form as its argument list."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), arguments
    return [str(word) for word in parsed]


def environment(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The variables the stage's ENV instructions set (``NAME=value`` forms)."""
    env = {}
    for keyword, arguments in steps:
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def healthcheck_command(steps: list[tuple[str, str]]) -> list[str]:
    """The HEALTHCHECK's command (after its options and CMD), in exec form."""
    (arguments,) = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    _, _, command = arguments.partition(" CMD ")
    return exec_form(command)
